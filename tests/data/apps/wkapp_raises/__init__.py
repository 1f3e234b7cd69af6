"""Fails while being imported, as a project whose settings are missing does."""

raise RuntimeError("DATABASE_URL is not set")
