"""Every ``web.AppKey`` of the control plane, in one module that imports no other of it.

Each area reads what the app holds through these keys (``request.app[DB]``); they live here,
rather than in the module that fills them, so that any module can import them at the top and
no import circle forms. The types are imported for the type checker only.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from mediaserver.room import Sfu
    from recorder.custody import CustodyLog
    from recorder.recording import Recorder
    from verifier.service import Verifier

    from .auth import Throttle
    from .config import Config
    from .db import Database
    from .deadlines.rules import Rules
    from .delivery.outcomes import OutcomeWriter
    from .documents.desk import DocumentDesk
    from .education.desk import AttendanceDesk, LiveDesk
    from .events import EventHub
    from .loopwatch import LoopWatch
    from .materials.api import UploadGate
    from .materials.store import MaterialStore
    from .sessions.display import DisplayManager
    from .sessions.tokens import TokenSigner
    from .verification.prejoin import PrejoinDesk

# -- a worker's app (control/app.py) ---------------------------------------------------------
CONFIG: web.AppKey[Config] = web.AppKey("config")
SFU: web.AppKey[Sfu] = web.AppKey("sfu")
SIGNER: web.AppKey[TokenSigner] = web.AppKey("signer")
RECORDER: web.AppKey[Recorder] = web.AppKey("recorder")
CUSTODY: web.AppKey[CustodyLog] = web.AppKey("custody")
VERIFIER: web.AppKey[Verifier] = web.AppKey("verifier")  # absent when the verifier is off
ERRORS: web.AppKey[Counter[str]] = web.AppKey("signalling_errors")
WATCH: web.AppKey[LoopWatch] = web.AppKey("loop_watch")
# every open WebSocket (signalling and officers' events), closed first when the server stops
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
DB: web.AppKey[Database] = web.AppKey("db")
LOGIN_LIMIT: web.AppKey[Throttle] = web.AppKey("login_limit")  # per user name (auth.py)
LOGIN_ADDRESS_LIMIT: web.AppKey[Throttle] = web.AppKey("login_address_limit")  # per address
REDEEM_LIMIT: web.AppKey[Throttle] = web.AppKey("redeem_limit")  # invalid invitations
EVENTS: web.AppKey[EventHub] = web.AppKey("events")
DISPLAYS: web.AppKey[DisplayManager] = web.AppKey("displays")
STORE: web.AppKey[MaterialStore] = web.AppKey("materials")
GATE: web.AppKey[UploadGate] = web.AppKey("material_uploads")
DESK: web.AppKey[PrejoinDesk] = web.AppKey("prejoin")  # the identity check before joining
DOCS: web.AppKey[DocumentDesk] = web.AppKey("documents")  # templates, CA, numbers, PDFs
RULES: web.AppKey[Rules] = web.AppKey("deadline_rules")  # calendar and limits
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")  # the description served
ATTENDANCE: web.AppKey[AttendanceDesk] = web.AppKey("attendance")  # education sessions
LIVE: web.AppKey[LiveDesk] = web.AppKey("education_live")  # hands, floor, questions, quiz
# providers' outcome writes (delivery, education sends), closed before what they write to
OUTCOMES: web.AppKey[OutcomeWriter] = web.AppKey("provider_outcomes")

# -- the front of several workers (control/front.py) -----------------------------------------
WORKERS: web.AppKey[list[str]] = web.AppKey("workers")
CLIENT: web.AppKey[aiohttp.ClientSession] = web.AppKey("client")
SECRET: web.AppKey[str] = web.AppKey("front_secret")
