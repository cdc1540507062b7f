"""Pure domain model: money, aggregates, the transition tables, events and errors. No I/O."""
