"""A participant in Python: speaks the signalling protocol and runs real aiortc peer connections.

The bench uses it to simulate parties, and the tests use it as a real client. It can record
SHA-256 hashes of the RTP payloads it sends and receives, and it can count received packets
without decoding them (``decode=False``), so that many simulated subscribers cost little.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from aiortc.rtp import RtpPacket, is_rtcp

from .impair import ImpairedLink
from .jitter import GuardedJitterBuffer, guard_receiver


def _drain_when_connected(pc: RTCPeerConnection) -> None:
    """Once connected, read this client's ICE sockets as the server reads its own
    (:mod:`mediaserver.sockets`: every waiting datagram when ready, big buffers), as a browser
    does. A client reading one datagram a turn next to a server that reads them all, on one
    event loop (the tests), fell behind the server's bursts and lost runs of packets."""
    from mediaserver.sockets import tune_ice_sockets

    @pc.on("connectionstatechange")
    def changed() -> None:
        if pc.connectionState == "connected":
            tune_ice_sockets(pc)


VIDEO_CLOCK = 90000


class _PacedVideoTrack(MediaStreamTrack):
    """Frames at a fixed rate from ``_render(seconds)``."""

    kind = "video"

    def __init__(self, fps: int) -> None:
        super().__init__()
        self._fps = fps
        self._start: float | None = None
        self._count = 0

    def _render(self, seconds: float) -> np.ndarray:
        raise NotImplementedError

    async def _next(self) -> int:
        """Wait for the next frame's time at ``fps`` from the first call; its number."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count / self._fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = self._count
        self._count += 1
        return n

    async def recv(self) -> av.VideoFrame:
        n = await self._next()
        frame = av.VideoFrame.from_ndarray(self._render(n / self._fps), format="rgb24")
        frame.pts = int(n * VIDEO_CLOCK / self._fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class PatternVideoTrack(_PacedVideoTrack):
    """Moving synthetic colour gradients."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__(fps)
        self._width, self._height = width, height
        y = np.arange(height, dtype=np.uint16)[:, None]
        x = np.arange(width, dtype=np.uint16)[None, :]
        self._x, self._y = x, y

    def _render(self, seconds: float) -> np.ndarray:
        n = round(seconds * self._fps)
        x, y = self._x, self._y
        img = np.empty((self._height, self._width, 3), dtype=np.uint8)
        img[..., 0] = (x + n * 4) % 256
        img[..., 1] = (y + n * 2) % 256
        img[..., 2] = ((x + y) // 2 + n) % 256
        return img


class ImageVideoTrack(_PacedVideoTrack):
    """A camera pointed at photos: each image of ``schedule`` (start second, RGB image or None
    for an empty grey scene) is shown moving, breathing in scale and with sensor noise."""

    def __init__(
        self,
        schedule: list[tuple[float, np.ndarray | None]],
        width: int = 640,
        height: int = 480,
        fps: int = 15,
        noise: float = 4.0,
    ) -> None:
        super().__init__(fps)
        self._schedule = sorted(schedule, key=lambda item: item[0])
        self._width, self._height, self._noise = width, height, noise
        self._rng = np.random.default_rng(7)

    def image_at(self, seconds: float) -> np.ndarray | None:
        current = None
        for start, image in self._schedule:
            if seconds >= start:
                current = image
        return current

    def _render(self, seconds: float) -> np.ndarray:
        import cv2

        canvas = np.full((self._height, self._width, 3), 110, dtype=np.uint8)
        image = self.image_at(seconds)
        if image is not None:
            scale = self._height * 0.85 / image.shape[0] * (1 + 0.06 * np.sin(seconds * 1.3))
            w, h = int(image.shape[1] * scale), int(image.shape[0] * scale)
            w, h = min(w, self._width), min(h, self._height)
            resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            x = (self._width - w) // 2 + int(25 * np.sin(seconds * 0.9))
            y = (self._height - h) // 2 + int(12 * np.cos(seconds * 1.1))
            x, y = max(0, min(self._width - w, x)), max(0, min(self._height - h, y))
            canvas[y : y + h, x : x + w] = resized
        if self._noise:
            noise = self._rng.normal(0, self._noise, canvas.shape)
            canvas = np.clip(canvas + noise, 0, 255).astype(np.uint8)
        return canvas


class EncodedLoopVideoTrack(_PacedVideoTrack):
    """A camera whose video was encoded once (``frames``, from :func:`encode_vp8_loop`) and is
    sent again and again as pre-encoded packets (aiortc packetizes them without its encoder).
    Many simulated publishers in one process then share one encoding and cost what sending
    costs, not a VP8 encoder each; the server (forwarding, the verifier's decoding and judging)
    sees ordinary VP8. A keyframe request is answered by the next loop's keyframe."""

    kind = "video"

    def __init__(self, frames: list[bytes], fps: int) -> None:
        super().__init__(fps)
        if not frames:
            raise ValueError("no frames to loop")
        self._frames = frames

    async def recv(self) -> av.Packet:  # type: ignore[override]
        n = await self._next()
        packet = av.Packet(self._frames[n % len(self._frames)])
        packet.pts = int(n * VIDEO_CLOCK / self._fps)
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return packet


def encode_vp8_loop(source: _PacedVideoTrack, fps: int, seconds: float = 2.0) -> list[bytes]:
    """``seconds`` of ``source`` as VP8 frames, the first a keyframe and no other (for
    :class:`EncodedLoopVideoTrack`; blocking: call it before the loop's work, or in a thread)."""
    count = max(1, round(seconds * fps))
    first = source._render(0.0)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = first.shape[1], first.shape[0]
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = 300_000
    codec.gop_size = count + 1  # one keyframe per loop: the first
    codec.options = {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}
    out: list[bytes] = []
    for n in range(count):
        image = first if n == 0 else source._render(n / fps)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        out.extend(bytes(p) for p in codec.encode(frame))
    out.extend(bytes(p) for p in codec.encode(None))
    return out[:count]


def tone_frame(n: int, samples: int = 960) -> av.AudioFrame:
    """The ``n``-th 20 ms frame of a steady 440 Hz stereo tone at 48 kHz (for encoders)."""
    t = (np.arange(samples) + n * samples) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None], format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = n * samples
    return frame


class ToneAudioTrack(MediaStreamTrack):
    """A 48 kHz tone whose loudness changes every frame, so no two Opus packets are alike."""

    kind = "audio"
    SAMPLES = 960  # 20 ms

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self._frequency = frequency
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = self._count
        self._count += 1
        t = (np.arange(self.SAMPLES) + n * self.SAMPLES) / 48000
        level = 4000 + 3000 * np.sin(n / 7.0)
        samples = (level * np.sin(2 * np.pi * self._frequency * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = n * self.SAMPLES
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


def _config() -> RTCConfiguration:
    """No STUN, everything on one transport: with aiortc's default (balanced) policy a second
    audio m-line of an offer stays off the bundle and its packets land in the first audio
    receiver."""
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class CountingSink:
    """Receives forwarded packets without decoding (see mediaserver.aiortc_hooks)."""

    def __init__(self, client: PeerClient, mid: str | None) -> None:
        self._client = client
        self._mid = mid

    def on_rtp(self, packet: RtpPacket) -> None:
        self._client._count_received(packet, self._mid)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        pass


class PeerClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        decode: bool = True,
        record_payloads: bool = False,
        sink_factory: Callable[[PeerClient, str | None], Any] | None = None,
        link: ImpairedLink | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # what receives packets when not decoding (needs mediaserver.aiortc_hooks.install())
        self.sink_factory = sink_factory or CountingSink
        self.token = token
        self.decode = decode
        self.record_payloads = record_payloads
        self.messages: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.joined: dict[str, Any] | None = None
        self.tracks: dict[str, dict[str, Any]] = {}  # subscriber mid -> track description
        self.sent_hashes: dict[int, list[str]] = defaultdict(list)  # by SSRC
        self.sent_timestamps: dict[int, list[int]] = defaultdict(list)  # by SSRC, per packet
        self.sent_seqs: dict[int, list[int]] = defaultdict(list)  # by SSRC, per packet
        self.received_seqs: dict[str, list[int]] = defaultdict(list)  # by mid, per packet
        self.received_hashes: dict[str, list[str]] = defaultdict(list)  # by mid
        self.received_packets: dict[str, int] = defaultdict(int)
        self.received_seq: dict[str, tuple[int, int, int]] = {}  # mid -> (first, highest, count)
        self.received_ssrc: dict[str, int] = {}  # mid -> media SSRC seen
        self.frames: dict[str, list[Any]] = defaultdict(list)  # mid -> decoded frames (last few)
        self.frame_counts: dict[str, int] = defaultdict(int)
        self.frame_times: dict[str, list[float]] = defaultdict(list)  # mid -> loop time, per frame
        self.jitter_buffers: dict[str, GuardedJitterBuffer] = {}  # mid -> video receiver's
        self.publisher_pc: RTCPeerConnection | None = None
        # an impaired network under both peer connections (bench.impair), if any
        self.link = link
        self.subscriber_pc = RTCPeerConnection(_config())
        _drain_when_connected(self.subscriber_pc)
        if link is not None:
            link.impair(self.subscriber_pc)
        self.subscriber_pc.on("track", self._on_track)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._consumers: set[asyncio.Task[None]] = set()
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []
        self.closed_reason: str | None = None
        self.ws_close_code: int | None = None
        self._seen_answers: list[dict[str, Any]] = []

    # -- signalling ------------------------------------------------------------------------
    async def connect(self, join: bool = True) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(f"{self.base_url}/ws", max_msg_size=1 << 22)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if join:
            await self.send({"type": "join", "token": self.token})
            self.joined = await self.wait_for(lambda m: m["type"] in ("joined", "error"))
            if self.joined["type"] == "error":
                raise RuntimeError(f"join refused: {self.joined}")

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> asyncio.Future[Any]:
        for message in self.messages:
            if predicate(message):
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                future.set_result(message)
                return future
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return asyncio.ensure_future(asyncio.wait_for(future, timeout))

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(msg.data)
            self.messages.append(message)
            kind = message.get("type")
            if kind == "error":
                self.errors.append(message)
            elif kind == "offer":
                try:
                    await self._answer(message)
                except (ConnectionError, RuntimeError) as exc:
                    # the server may close while we answer (it is stopping, or removed us):
                    # keep reading, the bye that explains it comes next
                    self.errors.append(
                        {"type": "error", "code": "answer_failed", "message": str(exc)}
                    )
            elif kind == "tracks":
                self.tracks = message["tracks"]
            elif kind == "bye":
                self.closed_reason = message.get("reason")
            for predicate, future in list(self._waiters):
                if not future.done() and predicate(message):
                    future.set_result(message)
                    self._waiters.remove((predicate, future))
        self.ws_close_code = self._ws.close_code

    async def _answer(self, message: dict[str, Any]) -> None:
        pc = self.subscriber_pc
        self.tracks = message.get("tracks", {})
        await pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
        if not self.decode:
            for transceiver in pc.getTransceivers():
                receiver = transceiver.receiver
                attach = getattr(receiver, "attach_sink", None)  # needs aiortc_hooks.install()
                if attach is not None and getattr(receiver, "_sfu_sink", None) is None:
                    attach(self.sink_factory(self, transceiver.mid))
        else:
            for transceiver in pc.getTransceivers():
                # frames reassembled as a browser would (bench/jitter.py)
                guarded = guard_receiver(transceiver.receiver)
                if guarded is not None and transceiver.mid is not None:
                    self.jitter_buffers[transceiver.mid] = guarded
                if self.record_payloads:
                    self._tap_receiver(transceiver.receiver, transceiver.mid)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "answer", "sdp": pc.localDescription.sdp})

    # -- publishing ------------------------------------------------------------------------
    async def publish(self, *tracks: MediaStreamTrack, video_codec: str | None = None) -> None:
        if self.publisher_pc is None:
            self.publisher_pc = RTCPeerConnection(_config())
            _drain_when_connected(self.publisher_pc)
            if self.link is not None:
                self.link.impair(self.publisher_pc)
        pc = self.publisher_pc
        for track in tracks:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video" and video_codec:
                capabilities = RTCRtpReceiver.getCapabilities("video")
                caps = capabilities.codecs if capabilities is not None else []
                transceiver.setCodecPreferences(
                    [c for c in caps if c.mimeType.lower() in (video_codec.lower(), "video/rtx")]
                )
        await pc.setLocalDescription(await pc.createOffer())
        if self.record_payloads:
            self._tap_sender_transport(pc)
        answer_future = self.wait_for(
            lambda m: (
                m["type"] in ("publish_answer", "error")
                and m.get("ref", "publish") == "publish"
                and m not in self._seen_answers
            )
        )
        await self.send({"type": "publish", "sdp": pc.localDescription.sdp})
        answer = await answer_future
        self._seen_answers.append(answer)
        if answer["type"] == "error":
            raise RuntimeError(f"publish refused: {answer}")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    # -- taps (test instrumentation on the client side only) --------------------------------
    def _tap_sender_transport(self, pc: RTCPeerConnection) -> None:
        for transceiver in pc.getTransceivers():
            dtls = transceiver.sender.transport
            if getattr(dtls, "_remotecase_tapped", False):
                continue
            original = dtls._send_rtp

            async def send_rtp(data: bytes, _original: Any = original) -> None:
                if not is_rtcp(data):
                    packet = RtpPacket.parse(data)
                    # RTX retransmissions carry a copy; count originals only
                    if packet.payload_type in self._media_pts(pc):
                        self.sent_hashes[packet.ssrc].append(
                            hashlib.sha256(packet.payload).hexdigest()
                        )
                        self.sent_timestamps[packet.ssrc].append(packet.timestamp)
                        self.sent_seqs[packet.ssrc].append(packet.sequence_number)
                await _original(data)

            dtls._send_rtp = send_rtp  # type: ignore[method-assign]
            dtls._remotecase_tapped = True  # type: ignore[attr-defined]

    @staticmethod
    def _media_pts(pc: RTCPeerConnection) -> set[int]:
        pts: set[int] = set()
        for transceiver in pc.getTransceivers():
            for codec in getattr(transceiver, "_codecs", []):
                if not codec.mimeType.lower().endswith("/rtx"):
                    pts.add(codec.payloadType)
        return pts

    def _tap_receiver(self, receiver: Any, mid: str | None) -> None:
        if getattr(receiver, "_remotecase_tapped", False) or mid is None:
            return
        original = receiver._handle_rtp_packet

        async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
            codec = receiver._RTCRtpReceiver__codecs.get(packet.payload_type)
            if codec is not None and codec.mimeType.lower().endswith("/rtx"):
                # a retransmission (RFC 4588): count the original packet it carries
                if len(packet.payload) > 2 and self.record_payloads:
                    self.received_hashes[mid].append(hashlib.sha256(packet.payload[2:]).hexdigest())
                    self.received_seqs[mid].append(int.from_bytes(packet.payload[:2], "big"))
            elif codec is not None:
                self._count_received(packet, mid)
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle
        receiver._remotecase_tapped = True

    def _count_received(self, packet: RtpPacket, mid: str | None) -> None:
        key = mid or "?"
        self.received_packets[key] += 1
        self.received_ssrc[key] = packet.ssrc
        seq = packet.sequence_number
        first, highest, count = self.received_seq.get(key, (seq, seq, 0))
        if (seq - highest) & 0xFFFF < 0x8000:
            highest = seq
        self.received_seq[key] = (first, highest, count + 1)
        if self.record_payloads:
            self.received_hashes[key].append(hashlib.sha256(packet.payload).hexdigest())
            self.received_seqs[key].append(seq)

    # -- receiving -------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next(
            (t.mid for t in self.subscriber_pc.getTransceivers() if t.receiver.track is track), None
        )
        if self.decode:
            task = asyncio.get_running_loop().create_task(self._consume(track, mid or "?"))
            self._consumers.add(task)
            task.add_done_callback(self._consumers.discard)

    async def _consume(self, track: MediaStreamTrack, mid: str) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frame_counts[mid] += 1
                self.frame_times[mid].append(asyncio.get_running_loop().time())
                frames = self.frames[mid]
                frames.append(frame)
                if len(frames) > 5:
                    del frames[0]
        except MediaStreamError:
            pass

    def mids_for_participant(self, participant_id: str, kind: str | None = None) -> list[str]:
        return [
            mid
            for mid, t in self.tracks.items()
            if t["participant"] == participant_id and (kind is None or t["kind"] == kind)
        ]

    # -- closing ---------------------------------------------------------------------------
    async def leave(self) -> None:
        if self._ws is not None and not self._ws.closed:
            try:
                await self.send({"type": "leave"})
            except ConnectionError:
                pass

    async def close(self) -> None:
        for task in list(self._consumers):
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        for _, future in self._waiters:
            future.cancel()
        if self.publisher_pc is not None:
            await self.publisher_pc.close()
        await self.subscriber_pc.close()
        if self.link is not None:
            self.link.close()
        if self._session is not None:
            await self._session.close()


__all__ = [
    "AudioStreamTrack",
    "ImageVideoTrack",
    "PatternVideoTrack",
    "PeerClient",
    "ToneAudioTrack",
]
