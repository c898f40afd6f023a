"""Pure distribution rules: text and image variation, reps. No gRPC, SQL or Celery."""
