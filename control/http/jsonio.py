"""The JSON error format, the JSON parser and body reading shared by the HTTP APIs.

Errors are ``{"error": code, "message": text}`` with a 4xx status, plus ``"detail"`` (the
specific reason when ``code`` is shared, e.g. ``not_found`` / ``case_not_found``) and the
message's parameters as fields. :func:`json_error` words the message from the catalogs
(``control/i18n``) by a key, or takes a ``"中文 / English"`` text; :func:`localized_errors`
rewrites it in the request's language (``Accept-Language``, zh-CN by default) as it leaves.

Every JSON text from outside (request bodies, signalling and event-stream messages) is parsed
by :func:`loads`, which refuses nesting deeper than :data:`MAX_DEPTH` before parsing: Python's
parser recurses once per level, so ``"[" * 30000`` raised ``RecursionError`` (an answer 500,
a signalling session ended without a word) instead of a clear error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import i18n

MAX_DEPTH = 32  # no message of ours nests deeper than 4
# a JSON string (skipped whole: brackets inside it do not count; an unterminated one runs to
# the end, so that the scan stays linear) or a bracket
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


class JsonTooDeep(ValueError):
    """Nesting deeper than the limit (a ValueError: callers that refuse bad JSON refuse it)."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(i18n.both("bad_json.too_deep", max_depth=max_depth))
        self.max_depth = max_depth


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
                raise JsonTooDeep(max_depth)
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
        raise JsonTooDeep(max_depth) from None


# the wording of an error, kept on the exception for localized_errors
_WORDING = "_remotecase_wording"


def json_error(
    cls: type[web.HTTPException],
    code: str,
    message: str | None = None,
    *,
    detail: str | None = None,
    key: str | None = None,
    **params: Any,
) -> web.HTTPException:
    """The error answer ``cls`` with a JSON body.

    The message is the catalog's text of ``key`` (default: ``code.detail``, else ``code``) when
    ``message`` is None or the catalog has ``key``; otherwise ``message`` itself, a
    ``"中文 / English"`` text served in the asker's language. ``params`` fill the text's
    placeholders and are fields of the body too."""
    wording_key = key or (f"{code}.{detail}" if detail else code)
    if message is None or (key is not None and i18n.has(key)):
        wording: tuple[str | None, str | None] = (wording_key, None)
        words = i18n.text(wording_key, i18n.DEFAULT, **params)
    else:
        wording = (None, message)
        words = i18n.localize(message, i18n.DEFAULT)
    body: dict[str, Any] = {"error": code, "message": words}
    if detail is not None:
        body["detail"] = detail
    for name, value in params.items():
        body.setdefault(name, value)
    exc = cls(text=json.dumps(body, ensure_ascii=False), content_type="application/json")
    setattr(exc, _WORDING, (wording, params))
    return exc


def reword(exc: web.HTTPException, lang: str) -> None:
    """Write ``exc``'s message (made by :func:`json_error`) in ``lang``."""
    found = getattr(exc, _WORDING, None)
    if found is None or exc.text is None:
        return
    (wording_key, message), params = found
    words = (
        i18n.text(wording_key, lang, **params)
        if wording_key is not None
        else i18n.localize(message, lang)
    )
    body = json.loads(exc.text)
    body["message"] = words
    exc.text = json.dumps(body, ensure_ascii=False)
    exc.headers["Content-Language"] = lang


@web.middleware
async def localized_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Error answers in the request's language (``Accept-Language``; zh-CN by default). The
    outermost middleware, so that errors of the others are worded too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if getattr(exc, _WORDING, None) is not None:
            reword(exc, i18n.negotiate(request.headers.get("Accept-Language")))
            vary = exc.headers.get("Vary")
            exc.headers["Vary"] = f"{vary}, Accept-Language" if vary else "Accept-Language"
        raise


async def read_object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; ``{}`` for no body when ``empty_ok``."""
    if empty_ok and not request.body_exists:
        return {}
    try:
        body = loads(await request.read())
    except JsonTooDeep as exc:
        raise json_error(
            web.HTTPBadRequest, "bad_json", detail="too_deep", max_depth=exc.max_depth
        ) from None
    except ValueError:
        raise json_error(web.HTTPBadRequest, "bad_json", detail="not_json") from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "bad_json", detail="not_object")
    return body
