"""Adapters: database, providers, brokers and crypto, satisfying the service ports."""
