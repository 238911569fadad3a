"""Errors of the document library. Every message is Simplified Chinese first, then English."""

from __future__ import annotations


class DocumentError(Exception):
    """Base of every refusal by the document library; ``str()`` is the bilingual message."""


class TemplateError(DocumentError):
    """A template file is malformed: the message names the file and the key."""


class MissingFields(DocumentError):
    """The case data lacks fields a document kind requires."""

    def __init__(self, kind_title: str, missing: list[tuple[str, str]]) -> None:
        self.kind_title = kind_title
        self.missing = missing  # (path, Chinese label)
        zh = "、".join(f"{label}（{path}）" for path, label in missing)
        en = ", ".join(path for path, _ in missing)
        super().__init__(
            f"{kind_title}缺少必填字段：{zh} / {kind_title}: missing required field(s): {en}"
        )

    def __reduce__(self) -> tuple[type[MissingFields], tuple[str, list[tuple[str, str]]]]:
        # made again from its parts when it comes back from a worker process (documents/pool.py)
        return (MissingFields, (self.kind_title, self.missing))


class NumberingError(DocumentError):
    """A number cannot be taken or voided."""


class FontMissing(DocumentError):
    """No Chinese TrueType font is installed."""


class SigningError(DocumentError):
    """A signature cannot be made (no face match, revoked certificate, wrong field...)."""


class CAError(DocumentError):
    """The deployment's certificate authority refuses a request or is misconfigured."""
