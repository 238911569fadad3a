"""The OpenAPI 3 description of the whole HTTP API, served at ``/api/openapi.json``.

Written by hand rather than generated, each area next to its routes (a ``describe(add)``
beside its ``add_routes(app)``), from the building blocks here; :func:`assemble` puts the
areas together (``control/app.py`` does, in the order of ``DESCRIBED``). Each operation says
who may call it and what it answers.
``tests/test_openapi.py`` checks that every route the app registers is described (and nothing
else), and fuzzes the description with schemathesis against a live server: no 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

Schema = dict[str, Any]

ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable code"},
        "message": {"type": "string", "description": "what went wrong, for people"},
    },
}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}
REASON: Schema = {"type": "string", "minLength": 1, "maxLength": 500}
ID: Schema = {"type": "integer", "minimum": 1}
MATERIAL_ID: Schema = {"type": "string", "pattern": "^MAT_[0-9a-f]{16}$"}
TIME: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 with its UTC offset",
}

OFFICER: list[dict[str, list[str]]] = [{"officerLogin": []}]
PARTY: list[dict[str, list[str]]] = [{"partyLink": []}]
NOBODY: list[dict[str, list[str]]] = []

_ERRORS = {
    "400": "malformed JSON, a missing or wrong field, or a missing reason",
    "401": "no credentials, or unknown, expired or revoked ones",
    "403": "the caller's role may not do this",
    "404": "no such object, or one the caller may not see",
    "409": "the object's state does not allow it",
    "410": "the invitation is used, revoked or expired",
    "413": "the upload is larger than its type, the pixel or page budget or the quota allows",
    "415": "the upload's content is not an accepted type",
    "422": "the content cannot be used (damaged file, no single face, missing page)",
    "429": "too many failed attempts, or uploads at once; wait (Retry-After)",
}


def responses(
    ok: str, ok_schema: Schema | None, errors: str, content_type: str = "application/json"
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    code = ok.split(" ")[0]
    description = ok[len(code) :].strip() or "done"
    if ok_schema is None:
        out[code] = {"description": description}
    else:
        out[code] = {"description": description, "content": {content_type: {"schema": ok_schema}}}
    for status in errors.split():
        out[status] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def upgrade() -> dict[str, Any]:
    out = responses("101 switching to WebSocket", None, "400")
    out["400"]["description"] = "not a WebSocket upgrade request"
    return out


def json_body(properties: dict[str, Schema], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


def raw_body(description: str, types: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in types},
    }


def in_path(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query(
    name: str, schema: Schema, *, required: bool = False, description: str = ""
) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


def reason_query() -> dict[str, Any]:
    return query(
        "reason",
        REASON,
        required=True,
        description="why the evidence is accessed; logged in the custody log",
    )


def op(
    summary: str,
    security: list[dict[str, list[str]]],
    answers: dict[str, Any],
    *,
    tag: str,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """One operation: ``answers`` from :func:`responses`."""
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": answers,
    }
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = body
    if params:
        operation["parameters"] = params
    return operation


CASE = in_path("case", ID)
SESSION = in_path("session", ID)
PARTY_P = in_path("party", ID)
RECORDING = in_path("recording", {"type": "string", "pattern": "^REC_[0-9T]+_[0-9a-f]+$"})
MEDIA_TYPES = [
    "image/jpeg",
    "image/png",
    "application/pdf",
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "video/x-matroska",
    "application/octet-stream",
]


class Add(Protocol):
    """How an area adds one operation: ``add(path, method, operation, path_parameters)``."""

    def __call__(
        self,
        path: str,
        method: str,
        operation: dict[str, Any],
        params: list[dict[str, Any]] | None = None,
        /,
    ) -> None: ...


def assemble(describers: Iterable[Callable[[Add], None]]) -> dict[str, Any]:
    """The whole description: each area's ``describe(add)``, in the order given (the order of
    the tags in the reference page is the order they first appear)."""
    paths: dict[str, dict[str, Any]] = {}

    def add(
        path: str,
        method: str,
        operation: dict[str, Any],
        params: list[dict[str, Any]] | None = None,
        /,
    ) -> None:
        entry = paths.setdefault(path, {})
        if params:
            entry["parameters"] = params
        entry[method] = operation

    for describe in describers:
        describe(add)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "remotecase",
            "version": "0.1.0",
            "description": (
                "Remote handling of traffic cases by video. Errors are always "
                '`{"error": code, "message": text}` with a 4xx status. Officers send '
                "`Authorization: Bearer <login token>` (from /api/login); parties send their "
                "invitation link's token, or the signalling token that redeeming it gave. "
                "Every access to evidence needs a reason and is written to the custody log."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "officerLogin": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a login token from POST /api/login",
                },
                "partyLink": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an invitation token, or a party's signalling token",
                },
            },
        },
    }
