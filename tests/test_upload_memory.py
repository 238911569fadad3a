"""Uploads cannot exhaust the server: measured on a real ``remotecase serve`` process.

The server's resident memory is read from ``/proc/<pid>/status``; its peak (``VmHWM``) is reset
through ``/proc/<pid>/clear_refs`` just before the uploads, so the peak read afterwards is the
uploads' own. The bound (300 MiB over the resting size) is generous for a busy machine and far
below what holding the bodies costs (four 100 MiB uploads held in memory are 400 MiB before a
parser copies them) or what decoding the declared pixels costs (32768 x 32767 is 3 GiB as BGR).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from pathlib import Path

import aiohttp

from tests import samples
from tests.conftest import Api, ServeProcess, serve_process

BOUND = 300 << 20


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 32768, height: int = 32767) -> bytes:
    """A complete, valid 8-bit greyscale PNG of ``width`` x ``height`` black pixels: about
    1 MB for the default 32768 x 32767 (a billion pixels, just under OpenCV's own limit).

    The pixel data is all zeros (filter byte 0 and black pixels); it is compressed as a
    repeated fully flushed deflate block, so making it takes no longer than one block."""
    raw = height * (width + 1)
    block = 1 << 20
    count, rest = divmod(raw, block)
    assert count >= 2
    deflate = zlib.compressobj(9)
    first = deflate.compress(bytes(block)) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(bytes(block)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(bytes(rest)) + deflate.flush(zlib.Z_FINISH)
    # the trailer is the Adler-32 of `raw` zero bytes: a = 1, b = raw (mod 65521)
    stream = first + again * (count - 1) + tail[:-4] + struct.pack(">I", (raw % 65521) << 16 | 1)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", stream)
        + _png_chunk(b"IEND", b"")
    )


def padded_mp4(size: int) -> bytes:
    """A real MP4 (a one-second MPEG-4 clip) grown to ``size`` bytes with a top-level ``free``
    box, which ISO/IEC 14496-12 allows anywhere at the top level and players skip."""
    clip = samples.mp4_mpeg4(seconds=1)
    padding = size - len(clip) - 8
    assert padding > 0
    return clip + struct.pack(">I", padding + 8) + b"free" + bytes(padding)


def _status(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) << 10
    return values


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS (Linux 4.0+)


async def _party_links(api: Api, count: int) -> list[str]:
    officer = await api.login("li")
    status, case = await api.call(
        "POST", "/api/cases", officer, {"kind": "accident", "title": "G15 km 203"}
    )
    assert status == 201, case
    tokens = []
    for i in range(count):
        status, party = await api.call(
            "POST",
            f"/api/cases/{case['id']}/parties",
            officer,
            {"role": "driver", "name": f"Party {i}"},
        )
        assert status == 201, party
        status, invite = await api.call(
            "POST", f"/api/cases/{case['id']}/invitations", officer, {"party_id": party["id"]}
        )
        assert status == 201, invite
        tokens.append(invite["token"])
    return tokens


async def _settle(server: ServeProcess) -> int:
    """The server's resting size: once start-up is over and one upload went through."""
    pid = server.proc.pid
    await asyncio.sleep(1.0)
    return _status(pid)["VmRSS"]


async def test_a_billion_pixel_png_is_refused_from_its_header(tmp_path: Path) -> None:
    png = await asyncio.to_thread(huge_png)
    assert len(png) < 1_100_000
    async with (
        serve_process(tmp_path, VERIFIER__ENABLED="false") as server,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, server.base)
        (party,) = await _party_links(api, 1)
        status, small = await api.call(
            "POST", "/api/party/materials?name=a.jpg", party, data=samples.jpeg()
        )
        assert status == 201, small
        pid = server.proc.pid
        rest = await _settle(server)
        _reset_peak(pid)
        status, body = await api.call("POST", "/api/party/materials?name=scan.png", party, data=png)
        after = _status(pid)
        print(
            f"huge PNG: resting {rest >> 20} MiB, peak {after['VmHWM'] >> 20} MiB, "
            f"after {after['VmRSS'] >> 20} MiB"
        )
        assert (status, body["error"]) == (413, "too_many_pixels"), body
        assert "32768" in body["message"] and "像素" in body["message"], body
        assert after["VmHWM"] - rest < BOUND, (rest, after)
        # nothing was kept: the party's list still holds the one photo
        _, listed = await api.call("GET", "/api/party/materials", party)
        assert [m["id"] for m in listed["materials"]] == [small["id"]]


async def test_four_large_uploads_at_once_stay_small(tmp_path: Path) -> None:
    video = await asyncio.to_thread(padded_mp4, 100 << 20)
    async with (
        serve_process(tmp_path, VERIFIER__ENABLED="false") as server,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, server.base)
        parties = await _party_links(api, 2)
        status, small = await api.call(
            "POST", "/api/party/materials?name=a.jpg", parties[0], data=samples.jpeg()
        )
        assert status == 201, small
        pid = server.proc.pid
        rest = await _settle(server)
        _reset_peak(pid)
        results = await asyncio.gather(
            *(
                api.call(
                    "POST", f"/api/party/materials?name=dash{i}.mp4", parties[i % 2], data=video
                )
                for i in range(4)
            )
        )
        after = _status(pid)
        print(
            f"4 x 100 MiB: resting {rest >> 20} MiB, peak {after['VmHWM'] >> 20} MiB, "
            f"after {after['VmRSS'] >> 20} MiB"
        )
        for status, body in results:
            assert status == 201, body
            assert body["size"] == len(video) and body["content"]["codec"] == "mpeg4"
        assert after["VmHWM"] - rest < BOUND, (rest, after)
        assert after["VmRSS"] - rest < BOUND, (rest, after)
        stored = sorted((tmp_path / "var" / "materials").glob("*.bin"))
        assert len(stored) == 5

        # and downloads stream too: each checked whole against its hash, then sent in chunks
        async def download(party: str, material: dict[str, object]) -> str:
            digest = hashlib.sha256()
            async with http.get(
                f"{server.base}/api/party/materials/{material['id']}/content",
                headers={"Authorization": f"Bearer {party}"},
            ) as response:
                assert response.status == 200
                assert response.content_length == len(video)
                async for piece in response.content.iter_chunked(1 << 20):
                    digest.update(piece)
            return digest.hexdigest()

        _reset_peak(pid)
        digests = await asyncio.gather(*(download(parties[i % 2], results[i][1]) for i in range(4)))
        after = _status(pid)
        print(f"4 x 100 MiB down: resting {rest >> 20} MiB, peak {after['VmHWM'] >> 20} MiB")
        assert digests == [hashlib.sha256(video).hexdigest()] * 4
        assert after["VmHWM"] - rest < BOUND, (rest, after)
