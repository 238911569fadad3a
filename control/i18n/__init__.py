"""The server's words, one catalog per language: Simplified Chinese first, English second.

The catalogs are the JSON files beside this module (``zh-CN.json``, ``en.json``): flat maps
from a key to a text, with ``{name}`` placeholders filled from parameters. Error answers use the
error's own identifier as the key (``case_not_found``, ``bad_request.text``, a refusal's
``Refusal.NO_CASE``), the CLI and reports ``cli.*`` and ``report.*`` keys.
``tests/test_server_catalogs.py`` keeps the languages in step.

A language is picked from an ``Accept-Language`` header by :func:`negotiate`: the supported
language the client ranks highest (``zh``, ``zh-TW``, ``zh-Hans-CN`` ... are Chinese, ``en-*``
English); zh-CN when the header is absent or names neither.

Texts written in code as one ``"中文 / English"`` string (the style of areas that predate the
catalogs, or that are being written alongside) are split by :func:`split`, so they are served in
one language too without an entry here. This module imports nothing of ``control``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

LANGS = ("zh-CN", "en")
DEFAULT = "zh-CN"
HERE = Path(__file__).parent
_HAN = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_LATIN = re.compile(r"[A-Za-z]")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")


@functools.cache
def catalog(lang: str) -> Mapping[str, str]:
    """The catalog of ``lang`` (read once; read-only)."""
    if lang not in LANGS:
        raise KeyError(lang)
    data = json.loads((HERE / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{lang}.json: a JSON object of texts")
    return MappingProxyType(data)


def has(key: str) -> bool:
    return key in catalog(DEFAULT)


def _language(tag: str) -> str | None:
    lower = tag.lower()
    if lower == "zh" or lower.startswith("zh-"):
        return "zh-CN"
    if lower == "en" or lower.startswith("en-"):
        return "en"
    return None


def negotiate(header: str | None) -> str:
    """The language to answer in for an ``Accept-Language`` header (RFC 9110 ranges, q values;
    ``*`` is the default); zh-CN when absent, malformed or naming neither language."""
    if not header:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        tag, *params = (piece.strip() for piece in part.split(";"))
        if not _TAG.fullmatch(tag):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0  # malformed: the range is ignored
        found = DEFAULT if tag == "*" else _language(tag)
        if found is not None and 0 < q <= 1:
            ranked.append((-q, position, found))
    return min(ranked)[2] if ranked else DEFAULT


def _fill(template: str, params: Mapping[str, Any]) -> str:
    return _PLACEHOLDER.sub(
        lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0), template
    )


def text(key: str, lang: str = DEFAULT, /, **params: Any) -> str:
    """The text of ``key`` in ``lang`` with ``{name}`` filled from ``params``; zh-CN when the
    language lacks it; KeyError when no catalog has it (a missing text is a bug, found by the
    catalog test rather than shown to people as a key)."""
    words = catalog(lang if lang in LANGS else DEFAULT)
    template = words.get(key)
    if template is None:
        template = catalog(DEFAULT)[key]
    return _fill(template, params)


def both(key: str, /, **params: Any) -> str:
    """``中文 / English`` in one string: for logs, the console and texts with no reader's
    language (CLI output, files)."""
    return f"{text(key, 'zh-CN', **params)} / {text(key, 'en', **params)}"


def split(message: str) -> tuple[str, str] | None:
    """A ``"中文 / English"`` string as ``(zh, en)``: cut at the first ``/`` (followed by a
    space) with Chinese before it and none after; else (an English half that names a Chinese
    document, "the consent (送达地址确认书)") at the first ``/`` with Chinese before it and
    an English rest (more than twice as many Latin letters as Chinese characters); None for a
    text in one language."""
    for match in re.finditer(r"\s*/\s+", message):
        zh, en = message[: match.start()], message[match.end() :]
        if _HAN.search(zh) and en.strip() and not _HAN.search(en):
            return zh.strip(), en.strip()
    for match in re.finditer(r"\s*/\s+", message):
        zh, en = message[: match.start()], message[match.end() :]
        if _HAN.search(zh) and len(_LATIN.findall(en)) > 2 * len(_HAN.findall(en)):
            return zh.strip(), en.strip()
    return None


def localize(message: str, lang: str) -> str:
    """``message`` in ``lang`` when it is a ``中文 / English`` string, else as it is."""
    halves = split(message)
    if halves is None:
        return message
    return halves[1] if lang == "en" else halves[0]


def placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))
