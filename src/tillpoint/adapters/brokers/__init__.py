"""Brokers behind the `Publisher` port: in-process (the embedded default) and RabbitMQ."""
