"""Self-check exercises: one registry, one module per chapter."""
