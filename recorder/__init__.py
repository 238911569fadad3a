"""Recorder and chain of custody: recordings of a room's tracks (an ordinary in-process
subscriber of the room, typed against :mod:`mediaserver.protocols`), the Merkle custody log,
keys, offline verification and export. ``docs/architecture.md`` lists the modules.
"""
