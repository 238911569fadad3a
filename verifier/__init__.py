"""Continuous face verification (issue 4): an ordinary in-process subscriber of a room.

Not built yet; it will ask :class:`mediaserver.local.LocalSubscriber` for decoded frames.
"""
