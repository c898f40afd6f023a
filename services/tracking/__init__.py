"""Tracking service: who read which copy, for how long, and the interest tags sales act on.

Not built yet (its issue is open). Its API is sketched in
proto/contentops/tracking/v1/tracking.proto.
"""
