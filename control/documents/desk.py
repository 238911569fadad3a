"""What the documents area keeps for a worker: the templates (checked at start), the deployment's
CA and time-stamp authority, the number store and the PDFs' files.

Everything here blocks (the ``documents`` library renders, hashes and signs): the handlers call
it through ``asyncio.to_thread``. Files:

* ``<keys.dir>/documents/``: the CA (``documents.ca.DeploymentCA``: root, seal, officers, TSA,
  CRL), never inside the data directory;
* ``<data_dir>/documents/numbers.sqlite3``: the document numbers (per brigade, kind, year);
* ``<data_dir>/documents/case-<id>/doc-<id>-r<n>-<sha256[:16]>.pdf``: every revision of every
  document (mode 0600, written atomically, never overwritten: each signature is a new
  revision; read back only when its hash is the one the database holds).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from documents import NumberStore, load_templates
from documents.ca import DeploymentCA
from documents.render import RenderedDocument, render
from documents.signing import SigningSetup
from documents.templates import Template

# a prepared party signature waits this long for the browser (kept in the database:
# control/documents/store.py keep_pending / take_pending)
PENDING_SECONDS = 300


class IntegrityProblem(Exception):
    """A stored revision whose bytes are not those the database recorded."""

    def __init__(self, document_id: int, revision: int) -> None:
        super().__init__(
            f"文书 {document_id} 第 {revision} 版的文件与记录的哈希不符 / document "
            f"{document_id} revision {revision} does not match its recorded hash"
        )


class DocumentDesk:
    def __init__(
        self,
        data_dir: Path,
        keys_dir: Path,
        templates_dir: Path | None = None,
        tsa_url: str | None = None,
    ) -> None:
        self.dir = data_dir / "documents"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.templates: dict[str, Template] = load_templates(templates_dir)
        ca_dir = keys_dir / "documents"
        ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca = DeploymentCA(ca_dir)
        self.setup = SigningSetup(self.ca, tsa_url=tsa_url)
        self.numbers_path = self.dir / "numbers.sqlite3"
        self.locks: dict[int, asyncio.Lock] = {}  # one change at a time per document

    # -- numbers and rendering -----------------------------------------------------------
    def render_numbered(
        self, template: Template, data: dict[str, Any]
    ) -> tuple[RenderedDocument, int, int, str]:
        """Check, take the next number, render; a number taken but not used is voided with its
        reason (never given again, never a silent gap). (document, year, seq, number)."""
        template.check(data)  # before a number is taken
        brigade = str(data["department"]["brigade"])
        year = datetime.now(UTC).year
        store = NumberStore(self.numbers_path)
        try:
            taken = store.take(
                brigade,
                template.kind,
                year,
                template.short,
                str(data["department"].get("abbr", "")),
            )
            try:
                doc = render(template, data, taken.text)
            except BaseException as exc:
                store.void(
                    brigade, template.kind, year, taken.seq, f"生成失败 / rendering failed: {exc}"
                )
                raise
        finally:
            store.close()
        return doc, year, taken.seq, taken.text

    def void(self, brigade: str, kind: str, year: int, seq: int, reason: str) -> None:
        store = NumberStore(self.numbers_path)
        try:
            store.void(brigade, kind, year, seq, reason)
        finally:
            store.close()

    # -- files ---------------------------------------------------------------------------
    def path(self, case_id: int, document_id: int, revision: int, sha256: str) -> Path:
        """A revision's file; its name carries the start of its hash, so a file left by a
        change the database then refused (or a crash) never stands in a later one's way."""
        return self.dir / f"case-{case_id}" / f"doc-{document_id}-r{revision}-{sha256[:16]}.pdf"

    def write(self, case_id: int, document_id: int, revision: int, pdf: bytes) -> Path:
        """A new revision's file: 0600, written whole before it is named, never overwritten."""
        path = self.path(case_id, document_id, revision, hashlib.sha256(pdf).hexdigest())
        if path.exists():
            return path  # the same bytes (its hash in the name, checked when read)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pdf)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # refuses to replace an existing revision
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def read(self, doc: dict[str, Any]) -> bytes:
        """The document's current revision, checked against the hash the database holds."""
        pdf = self.path(doc["case_id"], doc["id"], doc["revision"], doc["sha256"]).read_bytes()
        if hashlib.sha256(pdf).hexdigest() != doc["sha256"]:
            raise IntegrityProblem(doc["id"], doc["revision"])
        return pdf
