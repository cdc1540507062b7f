"""tillpoint: payments that stay correct when the world misbehaves."""

__version__ = "0.1.0"
