"""Distribution service: every rep's personal, lightly varied copy of each published post.

Not built yet (its issue is open). Its API is sketched in
proto/contentops/distribution/v1/distribution.proto, and it will consume the
content service's PostPublishedEvent (Celery task
``contentops.distribution.post_published`` on queue ``distribution``).
"""
