"""Recorder and chain of custody (issue 3): an ordinary in-process subscriber of a room.

Not built yet; it will use :class:`mediaserver.local.LocalSubscriber` to receive RTP packets.
"""
