"""Background services a lab starts next to its cluster (pgAdmin, the crypto app)."""
