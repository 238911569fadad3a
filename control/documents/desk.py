"""What the documents area keeps for a worker: the templates (checked at start), the deployment's
CA and time-stamp authority, the number store and the PDFs' files.

Everything here blocks (the ``documents`` library renders, hashes and signs): the handlers call
it through ``asyncio.to_thread``, and the CPU-heavy part (rendering, the built-in signers'
signatures, reading a document's state) runs in :attr:`DocumentDesk.pool`'s worker processes
(``documents/pool.py``). Files:

* ``<keys.dir>/documents/``: the CA (``documents.ca.DeploymentCA``: root, seal, officers, TSA,
  CRL), never inside the data directory;
* ``<data_dir>/documents/numbers.sqlite3``: the document numbers (per brigade, kind, year);
* ``<data_dir>/documents/case-<id>/doc-<id>-r<n>-<sha256[:16]>-<random>.pdf.enc``: every
  revision of every document, encrypted at rest like materials and recordings: a random
  AES-256-GCM data key per revision, wrapped under the key-encryption key; the document's ID,
  the revision and the SHA-256 of the plaintext PDF are bound in as associated data. The
  wrapped key, the KEK's fingerprint, the file's name and the plaintext's SHA-256 are a row of
  ``document_files`` (written in the same transaction as the revision it belongs to); the
  file is mode 0600, written whole before it is named, never overwritten (each signature is a
  new revision), and read back only when it decrypts and its plaintext has the hash the
  database holds. ``remotecase keys rotate --kek`` rewraps the rows' keys
  (:func:`control.documents.store.rewrap_keys`); the files are not touched.
* ``doc-<id>-r<n>-<sha256[:16]>.pdf`` without ``.enc``: a revision written before encryption
  at rest (no ``document_files`` row): read as it is, still checked against its hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from documents import NumberStore, load_templates
from documents.ca import DeploymentCA
from documents.pool import DocumentPool, SetupSpec, render_job
from documents.render import RenderedDocument
from documents.signing import SigningSetup
from documents.templates import Template
from recorder.keys import KeyEncryptionKey, KeyProblem

# a prepared party signature waits this long for the browser (kept in the database:
# control/documents/store.py keep_pending / take_pending)
PENDING_SECONDS = 300
MAGIC = b"RCDOC1\0\0"  # an encrypted revision: MAGIC, 12-byte nonce, AES-256-GCM ciphertext


def _aad(document_id: int, revision: int, sha256: str) -> bytes:
    return f"remotecase-document-v1\0{document_id}\0{revision}\0{sha256}".encode()


@dataclass(frozen=True)
class SealedFile:
    """Where a revision was written and the key that opens it (a ``document_files`` row)."""

    name: str  # relative to the documents directory
    sha256: str  # of the plaintext PDF: what the custody log and the signatures refer to
    wrapped_key: str
    kek_fingerprint: str

    def row(self) -> dict[str, str]:
        return {
            "file": self.name,
            "sha256": self.sha256,
            "wrapped_key": self.wrapped_key,
            "kek_fingerprint": self.kek_fingerprint,
        }


class IntegrityProblem(Exception):
    """A stored revision whose bytes are not those the database recorded."""

    def __init__(self, document_id: int, revision: int, detail: str = "") -> None:
        super().__init__(
            f"文书 {document_id} 第 {revision} 版的文件与记录的哈希不符或无法解密 / document "
            f"{document_id} revision {revision} does not match its recorded hash or does not "
            f"decrypt" + (f" ({detail})" if detail else "")
        )


class DocumentDesk:
    def __init__(
        self,
        data_dir: Path,
        keys_dir: Path,
        templates_dir: Path | None = None,
        tsa_url: str | None = None,
        *,
        kek: KeyEncryptionKey,
        pool: DocumentPool | None = None,
    ) -> None:
        self.kek = kek
        # where rendering and the built-in signers' work runs (documents/pool.py); the app
        # owns and closes it. None: in the caller's thread (scripts and library tests)
        self.pool = pool if pool is not None else DocumentPool(0)
        self.dir = data_dir / "documents"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.templates: dict[str, Template] = load_templates(templates_dir)
        ca_dir = keys_dir / "documents"
        ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca = DeploymentCA(ca_dir)
        self.setup = SigningSetup(self.ca, tsa_url=tsa_url)
        self.spec = SetupSpec(ca_dir, tsa_url)  # what a worker process rebuilds it from
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
                doc = self.pool.call(render_job, template, data, taken.text)
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
        """A revision's file from before encryption at rest (read only)."""
        return self.dir / f"case-{case_id}" / f"doc-{document_id}-r{revision}-{sha256[:16]}.pdf"

    def write(self, case_id: int, document_id: int, revision: int, pdf: bytes) -> SealedFile:
        """A new revision's file, encrypted under its own data key: 0600, written whole before
        it is named, never overwritten (a random part in its name: a file left by a change the
        database then refused, or by a crash, never stands in a later one's way)."""
        sha = hashlib.sha256(pdf).hexdigest()
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        blob = MAGIC + nonce + AESGCM(key).encrypt(nonce, pdf, _aad(document_id, revision, sha))
        name = (
            f"case-{case_id}/doc-{document_id}-r{revision}-{sha[:16]}-"
            f"{secrets.token_hex(4)}.pdf.enc"
        )
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # refuses to replace an existing file
        finally:
            tmp.unlink(missing_ok=True)
        return SealedFile(name, sha, self.kek.wrap(key), self.kek.fingerprint)

    def discard(self, sealed: SealedFile) -> None:
        """A file written for a revision the database did not take (no row names it)."""
        (self.dir / sealed.name).unlink(missing_ok=True)

    def read(self, doc: dict[str, Any], sealed: dict[str, Any] | None) -> bytes:
        """The document's current revision, decrypted and checked against the hash the
        database holds. ``sealed``: its ``document_files`` row (None: a revision from before
        encryption at rest, read as it is)."""
        document_id, revision = int(doc["id"]), int(doc["revision"])
        try:
            return self._read(doc, sealed, document_id, revision)
        except FileNotFoundError:
            raise IntegrityProblem(document_id, revision, "file missing") from None

    def _read(
        self, doc: dict[str, Any], sealed: dict[str, Any] | None, document_id: int, revision: int
    ) -> bytes:
        if sealed is None:
            pdf = self.path(doc["case_id"], document_id, revision, doc["sha256"]).read_bytes()
        else:
            if sealed["sha256"] != doc["sha256"]:
                raise IntegrityProblem(document_id, revision)
            blob = (self.dir / str(sealed["file"])).read_bytes()
            try:
                key = self.kek.unwrap(str(sealed["wrapped_key"]), str(sealed["kek_fingerprint"]))
            except KeyProblem as exc:
                raise IntegrityProblem(document_id, revision, str(exc)) from None
            if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12 + 16:
                raise IntegrityProblem(document_id, revision)
            nonce = blob[len(MAGIC) : len(MAGIC) + 12]
            try:
                pdf = AESGCM(key).decrypt(
                    nonce, blob[len(MAGIC) + 12 :], _aad(document_id, revision, doc["sha256"])
                )
            except InvalidTag:
                raise IntegrityProblem(document_id, revision) from None
        if hashlib.sha256(pdf).hexdigest() != doc["sha256"]:
            raise IntegrityProblem(document_id, revision)
        return pdf
