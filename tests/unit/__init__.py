"""Unit tests: the domain and the service use cases, against in-memory fakes of the ports."""
