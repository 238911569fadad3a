"""Upload limits: pixel and page budgets read from the headers, concurrent uploads per uploader,
totals per party and per case; and the store's parts they rest on (the chunk-wise reader, the
locked partial files)."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from control.materials.store import (
    CHUNK,
    ContentBudget,
    MaterialRejected,
    MaterialStore,
    check_content,
    jpeg_size,
    png_size,
)
from recorder.keys import KeyEncryptionKey
from tests import samples
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_upload_memory import huge_png, padded_mp4


def _with_exif(jpeg: bytes, size: int = 60000) -> bytes:
    """The JPEG with a large APP1 (Exif) segment before its frame header, as cameras write."""
    segment = b"\xff\xe1" + struct.pack(">H", size + 2) + b"Exif\x00\x00" + bytes(size - 6)
    return jpeg[:2] + segment + jpeg[2:]


def _png(width: int, height: int) -> bytes:
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    return encoded.tobytes()


def test_sizes_come_from_the_headers() -> None:
    assert jpeg_size(io.BytesIO(samples.jpeg(640, 480))) == (640, 480)
    assert jpeg_size(io.BytesIO(_with_exif(samples.jpeg(64, 48)))) == (64, 48)
    assert png_size(io.BytesIO(_png(300, 200))) == (300, 200)
    assert png_size(io.BytesIO(huge_png())) == (32768, 32767)
    for broken in (
        b"\xff\xd8\xff\xe0\x00",
        b"\xff\xd8\xff\xda\x00\x08" + bytes(8),
        b"\xff\xd8" + b"\x00" * 10,
    ):
        with pytest.raises(MaterialRejected) as jpeg_refused:
            jpeg_size(io.BytesIO(broken))
        assert jpeg_refused.value.code == "corrupt"
    with pytest.raises(MaterialRejected) as png_refused:
        png_size(io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(30)))
    assert png_refused.value.code == "corrupt" and "IHDR" in png_refused.value.message


def test_budgets_refuse_before_decoding() -> None:
    small = ContentBudget(max_pixels=50_000, max_pdf_pages=2)
    cases = [
        ("image/png", huge_png(), ContentBudget(), "too_many_pixels", "32768x32767"),
        ("image/jpeg", _with_exif(samples.jpeg(640, 480)), small, "too_many_pixels", "640x480"),
        ("image/png", _png(300, 200), small, "too_many_pixels", "300x200"),
        ("video/mp4", samples.mp4_mpeg4(seconds=1), small, "too_many_pixels", "320x240"),
        ("video/webm", samples.webm_vp8(seconds=1), small, "too_many_pixels", "320x240"),
        ("application/pdf", samples.pdf(pages=3), small, "too_many_pages", "3 pages"),
    ]
    for media_type, data, budget, code, words in cases:
        with pytest.raises(MaterialRejected) as refused:
            check_content(media_type, io.BytesIO(data), budget)
        assert refused.value.code == code, (media_type, refused.value.message)
        assert words in refused.value.message and "上限" in refused.value.message

    import pypdfium2

    document = pypdfium2.PdfDocument.new()
    document.new_page(595, 842)
    document.new_page(20000, 842)
    out = io.BytesIO()
    document.save(out)
    document.close()
    with pytest.raises(MaterialRejected) as page:
        check_content("application/pdf", io.BytesIO(out.getvalue()), small)
    assert page.value.code == "page_too_large" and "page 2" in page.value.message

    # within the budget: accepted, with what they hold
    assert check_content("image/jpeg", io.BytesIO(_with_exif(samples.jpeg(160, 120))), small) == {
        "width": 160,
        "height": 120,
    }
    assert check_content("application/pdf", io.BytesIO(samples.pdf(pages=2)), small) == {"pages": 2}
    clip = check_content(
        "video/mp4", io.BytesIO(samples.mp4_mpeg4(seconds=1)), ContentBudget(max_pixels=76_800)
    )
    assert (clip["width"], clip["height"], clip["codec"]) == (320, 240, "mpeg4")


def test_the_reader_decrypts_chunk_by_chunk_and_notices_damage(tmp_path: Path) -> None:
    store = MaterialStore(tmp_path / "materials", KeyEncryptionKey(secrets.token_bytes(32)))
    data = os.urandom(2 * CHUNK + 12345)
    writer = store.writer(store.new_id())
    for i in range(0, len(data), 100_000):
        writer.write(data[i : i + 100_000])
    writer.seal()
    with writer.reader() as reader:
        assert reader.read() == data
        reader.seek(CHUNK - 3)
        assert reader.read(7) == data[CHUNK - 3 : CHUNK + 4]
        reader.seek(-5, io.SEEK_END)
        assert reader.read(100) == data[-5:]
        assert reader.raw.size == len(data)  # type: ignore[attr-defined]
    part = writer.path.with_name(writer.path.name + ".part")
    sealed = bytearray(part.read_bytes())
    sealed[CHUNK + 100] ^= 1  # in the second chunk
    part.write_bytes(bytes(sealed))
    with writer.reader() as reader:
        assert reader.read(1000) == data[:1000]
        with pytest.raises(ValueError, match="chunk 1 fails authentication"):
            reader.read()
    sealed[CHUNK + 100] ^= 1
    part.write_bytes(bytes(sealed[:-1000]))  # cut short: the last chunk no longer checks out
    with writer.reader() as reader, pytest.raises(ValueError, match="chunk 2"):
        reader.read()
    part.write_bytes(bytes(sealed))
    stored = writer.commit()
    assert stored.size == len(data)
    assert (
        b"".join(store.chunks(stored.material_id, stored.wrapped_key, stored.kek_fingerprint))
        == data
    )


def test_a_part_being_written_survives_another_process_starting(tmp_path: Path) -> None:
    kek = KeyEncryptionKey(secrets.token_bytes(32))
    store = MaterialStore(tmp_path / "materials", kek)
    writing = store.writer(store.new_id())
    writing.write(b"%PDF-1.7 ...")
    part = writing.path.with_name(writing.path.name + ".part")
    stale = tmp_path / "materials" / "MAT_0123456789abcdef.bin.part"
    stale.write_bytes(b"left by a server killed mid-upload")
    MaterialStore(tmp_path / "materials", kek)  # a worker starting (again) on the same data
    assert part.exists() and not stale.exists()
    writing.abort()
    assert not part.exists()


async def _paused(head: bytes, rest: bytes, go: asyncio.Event) -> AsyncIterator[bytes]:
    yield head
    await go.wait()
    yield rest


async def _streamed(data: bytes) -> AsyncIterator[bytes]:
    """A body without a declared length."""
    for i in range(0, len(data), 1 << 16):
        yield data[i : i + (1 << 16)]


async def _invite(api: Api, officer: str, case_id: int, name: str) -> str:
    status, party = await api.call(
        "POST", f"/api/cases/{case_id}/parties", officer, {"role": "witness", "name": name}
    )
    assert status == 201, party
    status, invite = await api.call(
        "POST", f"/api/cases/{case_id}/invitations", officer, {"party_id": party["id"]}
    )
    assert status == 201, invite
    return str(invite["token"])


def _parts(server: Server) -> int:
    from control.appkeys import CONFIG

    return len(list((server.app[CONFIG].data_dir / "materials").glob("*.part")))


async def test_a_party_runs_two_uploads_at_once_and_the_third_waits(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, _ = await case_with_party(api, li)
            wang = await _invite(api, li, cid, "Wang Wei")
            chen = await _invite(api, li, cid, "Chen Jing")
            photo = samples.jpeg()
            go = asyncio.Event()

            async def held() -> tuple[int, dict[str, object]]:
                async with http.post(
                    f"{server.base_url}/api/party/materials?name=held.jpg",
                    data=_paused(photo[:4096], photo[4096:], go),
                    headers={"Authorization": f"Bearer {wang}"},
                ) as response:
                    return response.status, await response.json()

            first = asyncio.create_task(held())
            second = asyncio.create_task(held())
            try:
                await wait_until(lambda: _parts(server) == 2, what="two uploads under way")
                async with http.post(
                    f"{server.base_url}/api/party/materials?name=third.jpg",
                    data=photo,
                    headers={"Authorization": f"Bearer {wang}"},
                ) as response:
                    assert response.status == 429
                    assert response.headers["Retry-After"] == "5"
                    body = await response.json()
                assert body["error"] == "too_many_uploads"
                assert body["message"].startswith("同时最多上传 2 个文件"), body
                # the limit is the uploader's: another party and the officer go ahead
                status, other = await api.call(
                    "POST", "/api/party/materials?name=c.jpg", chen, data=photo
                )
                assert status == 201, other
                status, evidence = await api.call(
                    "POST", f"/api/cases/{cid}/materials?name=scene.jpg", li, data=photo
                )
                assert status == 201, evidence
            finally:
                go.set()
                results = await asyncio.gather(first, second)
            assert [status for status, _ in results] == [201, 201], results
            # with the two done, the third goes through
            status, third = await api.call(
                "POST", "/api/party/materials?name=third.jpg", wang, data=photo
            )
            assert status == 201, third
            _, own = await api.call("GET", "/api/party/materials", wang)
            assert sorted(m["name"] for m in own["materials"]) == [
                "held.jpg",
                "held.jpg",
                "third.jpg",
            ]
            assert _parts(server) == 0
    finally:
        await server.runner.cleanup()


async def test_totals_per_party_and_per_case(tmp_path: Path) -> None:
    server = await start_server(
        make_config(tmp_path, materials={"max_party_total_mb": 1, "max_case_total_mb": 2})
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, _ = await case_with_party(api, li)
            wang = await _invite(api, li, cid, "Wang Wei")
            chen = await _invite(api, li, cid, "Chen Jing")
            clip = await asyncio.to_thread(padded_mp4, 600 << 10)

            status, kept = await api.call(
                "POST", "/api/party/materials?name=a.mp4", wang, data=clip
            )
            assert status == 201, kept
            # the second would pass the party's 1 MiB: refused from its declared length ...
            status, body = await api.call(
                "POST", "/api/party/materials?name=b.mp4", wang, data=clip
            )
            assert (status, body["error"]) == (413, "quota_exceeded"), body
            assert body["message"].startswith("您已上传 0.6 MiB，上限为 1 MiB"), body
            status, body = await api.call(
                "POST", "/api/party/materials?name=b.mp4", wang, data=clip, lang="en"
            )
            assert status == 413 and "this file does not fit" in body["message"], body
            # ... and, without one, once the bytes streamed pass what is left
            async with http.post(
                f"{server.base_url}/api/party/materials?name=b.mp4",
                data=_streamed(clip),
                headers={"Authorization": f"Bearer {wang}"},
            ) as response:
                assert response.status == 413
                assert (await response.json())["error"] == "quota_exceeded"
            # a small photo still fits
            status, photo = await api.call(
                "POST", "/api/party/materials?name=p.jpg", wang, data=samples.jpeg()
            )
            assert status == 201, photo

            # the case's 2 MiB count every party's and the officers' files
            status, body = await api.call(
                "POST", "/api/party/materials?name=c.mp4", chen, data=clip
            )
            assert status == 201, body
            larger = await asyncio.to_thread(padded_mp4, 900 << 10)
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/materials?name=d.mp4", li, data=larger
            )
            assert (status, body["error"]) == (413, "quota_exceeded"), body
            assert body["message"].startswith("本案已存材料"), body
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/materials?name=d.mp4", li, data=larger, lang="en"
            )
            assert status == 413 and "at most 2 MiB" in body["message"], body

            _, listed = await api.call("GET", f"/api/cases/{cid}/materials", li)
            assert sorted(m["name"] for m in listed["materials"]) == ["a.mp4", "c.mp4", "p.jpg"]
            assert _parts(server) == 0
            _, audit = await api.call("GET", f"/api/cases/{cid}/audit", li)
            refused = [x for x in audit["audit"] if x["action"] == "material.refused"]
            assert [x["reason"] for x in refused] == ["quota_exceeded"] * 5  # two asked in English
    finally:
        await server.runner.cleanup()


def test_the_limits_are_configured_and_checked() -> None:
    from control.config import ConfigError, load_config

    config = load_config(
        None,
        environ={
            "REMOTECASE_MATERIALS__MAX_MEGAPIXELS": "12.5",
            "REMOTECASE_MATERIALS__CONCURRENT_UPLOADS": "3",
        },
    )
    assert (config.materials.max_megapixels, config.materials.concurrent_uploads) == (12.5, 3)
    assert config.materials.max_party_total_mb == 2048
    for key, value in (
        ("max_megapixels", 0),
        ("max_pdf_pages", 0),
        ("concurrent_uploads", 0),
        ("max_party_total_mb", 0),
        ("max_case_total_mb", -1),
    ):
        with pytest.raises(ConfigError, match=f"materials.{key}"):
            load_config(None, environ={}, overrides={"materials": {key: value}})
