"""Why a store function did nothing, and the error answer each reason gets.

The plain functions that own the SQL (``cases/store.py``, ``sessions/store.py``,
``materials/records.py``, ``verification/store.py``, ``access.load_case``) return a
:class:`Refusal` rather than raising an HTTP error inside their transaction; the handler turns
it into the answer with :func:`done` or :func:`refused`. This module imports nothing of
``control`` but the error format, so every area may import it at the top.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from aiohttp import web

from .http.jsonio import json_error

T = TypeVar("T")


class CodedRefusal(enum.Enum):
    """The base of every area's refusals: each member is ``(code, message)``; an area's API maps
    its members to HTTP error classes and answers with :func:`unwrap`.

    The answer's ``detail`` is the member's name in lower case (``NO_CASE``: ``no_case``), the
    specific reason when several members share a code. Its words are the catalogs' text of
    ``code.detail`` (``control/i18n``, ``not_found.no_case``) when they have one, else
    ``message`` itself, written ``"中文 / English"`` (served in the asker's language)."""

    @property
    def code(self) -> str:
        return str(self.value[0])

    @property
    def message(self) -> str:
        return str(self.value[1])

    @property
    def detail(self) -> str:
        return self.name.lower()

    @property
    def key(self) -> str:
        """The catalog key of this refusal's words."""
        return f"{self.code}.{self.detail}"

    def error(self, cls: type[web.HTTPException]) -> web.HTTPException:
        """This refusal as the error answer ``cls``."""
        return json_error(cls, self.code, self.message, detail=self.detail, key=self.key)


R = TypeVar("R", bound=CodedRefusal)


def unwrap(result: T | R, status: Mapping[R, type[web.HTTPException]]) -> T:
    """A store function's result, or its refusal raised as the error answer ``status`` gives."""
    if isinstance(result, CodedRefusal):
        raise result.error(status[result])  # type: ignore[index]
    return result


class Refusal(CodedRefusal):
    """Why a case, session, invitation or material function did nothing: ``(code, message)``."""

    NO_CASE = ("not_found", "no such case")
    CASE_CLOSED = ("case_closed", "the case is closed")
    NO_PARTY = ("not_found", "no such party in this case")
    NO_SESSION = ("not_found", "no such session")
    NO_OPEN_SESSION = ("not_found", "no open session with this ID")
    SESSION_OPEN = ("session_open", "this case already has an open session")
    END_SESSION_FIRST = ("session_open", "end the open session first")
    SESSION_ENDED = ("ended", "the session has ended already")
    NO_INVITATION = ("not_found", "no such invitation")
    NO_MATERIAL = ("not_found", "no such material")
    AGENT_NOT_ACCEPTED = (
        "attorney_not_accepted",
        "委托代理人的授权委托书尚未审核通过，不能邀请 / the agent's power of attorney is not "
        "accepted: no invitation yet",
    )


_STATUS: dict[Refusal, type[web.HTTPException]] = {
    Refusal.NO_CASE: web.HTTPNotFound,
    Refusal.CASE_CLOSED: web.HTTPConflict,
    Refusal.NO_PARTY: web.HTTPNotFound,
    Refusal.NO_SESSION: web.HTTPNotFound,
    Refusal.NO_OPEN_SESSION: web.HTTPNotFound,
    Refusal.SESSION_OPEN: web.HTTPConflict,
    Refusal.END_SESSION_FIRST: web.HTTPConflict,
    Refusal.SESSION_ENDED: web.HTTPConflict,
    Refusal.NO_INVITATION: web.HTTPNotFound,
    Refusal.NO_MATERIAL: web.HTTPNotFound,
    Refusal.AGENT_NOT_ACCEPTED: web.HTTPConflict,
}


def refused(refusal: Refusal) -> web.HTTPException:
    """The error answer for a store function's refusal."""
    return refusal.error(_STATUS[refusal])


def done(result: T | Refusal) -> T:
    """A store function's result, or its refusal raised as the error answer."""
    return unwrap(result, _STATUS)
