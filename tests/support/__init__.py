"""Fakes the test suites inject in place of production adapters (never imported by `src/`)."""
