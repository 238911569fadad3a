"""The media plane: a packet-forwarding SFU on aiortc.

The vocabulary lives in :mod:`mediaserver.protocols`; :mod:`mediaserver.sfu` owns rooms,
:mod:`mediaserver.forwarding` moves RTP packets, :mod:`mediaserver.aiortc_hooks` is the only
module that touches aiortc's private parts.
"""
