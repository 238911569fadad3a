"""The JSON error format, the JSON parser and body reading shared by the HTTP APIs.

Errors are ``{"error": code, "message": text}`` with a 4xx status.

Every JSON text from outside (request bodies, signalling and event-stream messages) is parsed
by :func:`loads`, which refuses nesting deeper than :data:`MAX_DEPTH` before parsing: Python's
parser recurses once per level, so ``"[" * 30000`` raised ``RecursionError`` (an answer 500,
a signalling session ended without a word) instead of a clear error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

MAX_DEPTH = 32  # no message of ours nests deeper than 4
# a JSON string (skipped whole: brackets inside it do not count; an unterminated one runs to
# the end, so that the scan stays linear) or a bracket
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


class JsonTooDeep(ValueError):
    """Nesting deeper than the limit (a ValueError: callers that refuse bad JSON refuse it)."""


class PayloadTooLarge(web.HTTPClientError):
    """413 without aiohttp's required sizes (a streamed upload's size is not known)."""

    status_code = 413


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonTooDeep` if brackets outside strings nest deeper than ``max_depth``."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot nest deeper than it has brackets (the usual case: no scan)
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(
                    f"JSON 嵌套超过 {max_depth} 层 / JSON nested deeper than {max_depth} levels"
                )
        elif token in "]}":
            depth -= 1


def loads(data: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for text from outside: ValueError (JsonTooDeep for nesting) on bad input,
    never RecursionError."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    check_depth(text, max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # not reachable under the depth limit; kept as a last guard
        raise JsonTooDeep("JSON 嵌套过深 / JSON nested too deeply") from None


def json_error(cls: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    return cls(
        text=json.dumps({"error": code, "message": message}), content_type="application/json"
    )


async def read_object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; ``{}`` for no body when ``empty_ok``."""
    if empty_ok and not request.body_exists:
        return {}
    try:
        body = loads(await request.read())
    except JsonTooDeep as exc:
        raise json_error(web.HTTPBadRequest, "bad_json", str(exc)) from None
    except ValueError:
        raise json_error(
            web.HTTPBadRequest, "bad_json", "请求体不是 JSON / body is not JSON"
        ) from None
    if not isinstance(body, dict):
        raise json_error(
            web.HTTPBadRequest, "bad_json", "请求体须为 JSON 对象 / body must be a JSON object"
        )
    return body
