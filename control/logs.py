"""Log lines that say who: every record names its room, participant and track.

The media plane's loggers carry these IDs as ``LoggerAdapter`` extras (``room``,
``participant``, ``track``; the recorder adds ``recording``). :class:`IdFilter`, on the
handler, gives every record the IDs it lacks as ``-`` and the case its room belongs to, so one
format prints them on every line, from any library. ``log.format`` chooses the line:

* ``text``: ``2026-12-01 10:00:00,123 INFO mediaserver.participant room=case-7-1a2b
  participant=party-3 track=- closing: left``
* ``json``: one object per line with ``time``, ``level``, ``logger``, ``message``, ``room``,
  ``participant``, ``track``, ``case`` and ``exception`` (the traceback, or null), and
  ``recording`` when a record names one; for a log collector.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import IO, Any

from .config import LOG_FORMATS
from .events import case_of_room

IDS = ("room", "participant", "track")
NONE = "-"  # what a record that names no room (participant, track) prints
TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s room=%(room)s participant=%(participant)s "
    "track=%(track)s %(message)s"
)


class IdFilter(logging.Filter):
    """On a handler: every record gets ``room``, ``participant``, ``track`` (``-`` when it has
    none) and ``case`` (the case of a session room, else ``-``). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in IDS:
            if getattr(record, name, None) in (None, ""):
                setattr(record, name, NONE)
        if getattr(record, "case", None) in (None, ""):
            room = getattr(record, "room", NONE)
            case = case_of_room(str(room)) if room != NONE else None
            record.case = NONE if case is None else str(case)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (after :class:`IdFilter`)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*IDS, "case"):
            value = getattr(record, name, NONE)
            out[name] = None if value == NONE else str(value)
        recording = getattr(record, "recording", None)
        if recording:
            out["recording"] = str(recording)
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            exception = (exception + "\n" if exception else "") + self.formatStack(
                record.stack_info
            )
        out["exception"] = exception
        return json.dumps(out, ensure_ascii=False)


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) that prints the IDs, as ``text`` or ``json``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.addFilter(IdFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    return handler


def configure(level: str, log_format: str) -> logging.Handler:
    """The process's logging: one handler on the root logger at ``level``."""
    handler = make_handler(log_format)
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    return handler
