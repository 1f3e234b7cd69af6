"""``app`` exists but is not a Celery app."""

app = 42
