"""The JSON error format and body reading shared by the HTTP APIs.

Errors are ``{"error": code, "message": text}`` with a 4xx status.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class PayloadTooLarge(web.HTTPClientError):
    """413 without aiohttp's required sizes (a streamed upload's size is not known)."""

    status_code = 413


def json_error(cls: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": code, "message": message}),
               content_type="application/json")


async def read_object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; ``{}`` for no body when ``empty_ok``."""
    if empty_ok and not request.body_exists:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise json_error(web.HTTPBadRequest, "bad_json", "body is not JSON") from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "bad_json", "body must be a JSON object")
    return body
