"""The service use cases against the fakes of tests/unit/fakes.py."""
