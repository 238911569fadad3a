"""Materials: typed by content, size-limited, hashed into custody, encrypted, downloads logged."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from control.appkeys import CUSTODY
from tests import samples
from tests.conftest import Api, make_config, officer_login, start_server


async def _chunks(data: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_uploads_are_typed_limited_hashed_encrypted_and_private(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, materials={"max_image_mb": 1}))
    custody = server.app[CUSTODY]
    store_dir = tmp_path / "var" / "materials"
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "accident", "title": "G15 km 203"}
            )
            cid = case["id"]
            links = {}
            for name in ("Wang Wei", "Chen Jing"):
                _, party = await api.call(
                    "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": name}
                )
                _, invite = await api.call(
                    "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
                )
                links[name] = (party["id"], invite["token"])
            wang_id, wang = links["Wang Wei"]
            _, chen = links["Chen Jing"]

            photo = samples.jpeg()
            status, material = await api.call(
                "POST", "/api/party/materials?name=bill.jpg", wang, data=photo
            )
            assert status == 201, material
            assert material["media_type"] == "image/jpeg"
            assert material["sha256"] == hashlib.sha256(photo).hexdigest()
            assert material["size"] == len(photo) and material["party_id"] == wang_id
            assert material["content"] == {"width": 640, "height": 480}
            entry = custody.entry(material["custody_index"])
            assert (entry["type"], entry["sha256"], entry["actor"]) == (
                "material.received",
                material["sha256"],
                f"party:{wang_id}",
            )

            # stored encrypted: no run of the photo's bytes is on disk
            stored = (store_dir / f"{material['id']}.bin").read_bytes()
            assert photo[:64] not in stored and photo[1000:1064] not in stored

            # the type comes from the content; refusals name the reason and keep nothing
            refused = [
                (
                    b"MZ\x90\x00" + os.urandom(5000),
                    "photo.jpg",
                    415,
                    "unsupported_type",
                    "Windows executable",
                ),
                (b"\x7fELF" + os.urandom(100), "scan.pdf", 415, "unsupported_type", "Linux"),
                (b"", "empty.jpg", 400, "empty", "empty"),
                (b"\xff\xd8\xff\xe0" + os.urandom(3000), "broken.jpg", 422, "corrupt", "damaged"),
                (b"%PDF-1.7\n" + os.urandom(3000), "broken.pdf", 422, "corrupt", "damaged"),
                (b"\xff\xd8\xff\xe0" + bytes(2 << 20), "huge.jpg", 413, "too_large", "1 MiB"),
            ]
            for data, name, code, error, words in refused:
                status, body = await api.call(
                    "POST", f"/api/party/materials?name={name}", wang, data=data, lang="en"
                )
                assert (status, body["error"]) == (code, error), (name, body)
                assert words in body["message"], body
            # the same oversized image without a declared length: cut off while streaming
            async with http.post(
                f"{server.base_url}/api/party/materials?name=huge.jpg",
                data=_chunks(b"\xff\xd8\xff\xe0" + bytes(2 << 20)),
                headers={"Authorization": f"Bearer {wang}"},
            ) as response:
                assert response.status == 413
                assert (await response.json())["error"] == "too_large"
            status, body = await api.call("POST", "/api/party/materials", wang, data=photo)
            assert (status, body["error"]) == (400, "bad_request")  # no name
            kept = sorted(p.name for p in store_dir.iterdir() if p.is_file())
            assert kept == [f"{material['id']}.bin"]  # no partial file either

            status, pdf = await api.call(
                "POST", "/api/party/materials?name=licence.pdf", wang, data=samples.pdf(pages=3)
            )
            assert status == 201 and pdf["content"] == {"pages": 3}
            clip = await asyncio.to_thread(samples.mp4_mpeg4, seconds=1)
            status, video = await api.call(
                "POST", f"/api/cases/{cid}/materials?name=dash.mp4", li, data=clip
            )
            assert status == 201 and video["origin"] == "officer"
            assert video["content"]["codec"] == "mpeg4" and video["party_id"] is None

            # a party sees and downloads only its own uploads
            _, own = await api.call("GET", "/api/party/materials", wang)
            assert {m["id"] for m in own["materials"]} == {material["id"], pdf["id"]}
            _, theirs = await api.call("GET", "/api/party/materials", chen)
            assert theirs["materials"] == []
            status, _ = await api.call(
                "GET", f"/api/party/materials/{material['id']}/content", chen
            )
            assert status == 404
            status, _ = await api.call("GET", f"/api/party/materials/{video['id']}/content", wang)
            assert status == 404  # officers' evidence items are shown, not handed out
            status, body = await api.call(
                "GET", f"/api/party/materials/{material['id']}/content", wang
            )
            assert status == 200 and body == photo

            # officers of the brigade see everything; a download needs a reason and is logged
            _, listed = await api.call("GET", f"/api/cases/{cid}/materials", li)
            assert len(listed["materials"]) == 3
            assert "wrapped_key" not in listed["materials"][0]
            assert (await api.call("GET", f"/api/cases/{cid}/materials", wu))[0] == 404
            path = f"/api/cases/{cid}/materials/{material['id']}/content"
            status, body = await api.call("GET", path, li)
            assert (status, body["error"]) == (400, "reason_required")
            assert (await api.call("GET", path + "?reason=review", wu))[0] == 404
            before = custody.size
            status, body = await api.call("GET", path + "?reason=responsibility+review", li)
            assert status == 200 and body == photo
            logged = custody.entries()[before:]
            assert [(e["type"], e["actor"], e["reason"]) for e in logged] == [
                ("material.downloaded", "officer:li", "responsibility review")
            ]

            # a flipped byte on disk is caught at the next use
            target = store_dir / f"{material['id']}.bin"
            damaged = bytearray(target.read_bytes())
            damaged[len(damaged) // 2] ^= 1
            target.write_bytes(bytes(damaged))
            status, body = await api.call("GET", path + "?reason=review", li)
            assert (status, body["error"]) == (409, "integrity_failed")

            # closing the case revokes links never used, and takes no more materials
            assert (await api.call("POST", f"/api/cases/{cid}/close", li, {"reason": "settled"}))[
                0
            ] == 200
            status, body = await api.call(
                "POST", "/api/party/materials?name=late.jpg", wang, data=photo
            )
            assert (status, body["error"]) == (401, "unauthorized")
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/materials?name=x.jpg", li, data=photo
            )
            assert (status, body["error"]) == (409, "case_closed")

            _, audit = await api.call("GET", f"/api/cases/{cid}/audit", li)
            actions = [(x["action"], x["reason"]) for x in audit["audit"]]
            assert ("material.refused", "unsupported_type") in actions
            assert ("material.refused", "too_large") in actions
            assert ("material.downloaded", "responsibility review") in actions
    finally:
        await server.runner.cleanup()
