"""The document library's CPU-heavy work in worker processes, off the server's interpreter.

pyhanko, asn1crypto and fpdf2 are pure Python: run in a thread, they hold the interpreter's lock
(GIL) and the media loop waits for it (a signing held it 0.6-0.8 s, docs/performance.md). A
:class:`DocumentPool` runs rendering, the built-in signers' signatures and reading a document's
state in a ``concurrent.futures.ProcessPoolExecutor`` of its own processes instead:

* started lazily, on the first job (a server that signs nothing starts no process), from the
  ``forkserver`` context: a process with running threads and an event loop is never forked;
  the fork server is a fresh interpreter that imports this module once, and each worker is
  forked from it (cheap after the first);
* bounded (``server.document_workers``, 1 by default; 0 runs the jobs in threads as before);
* every job takes picklable inputs (bytes, paths, config values) and rebuilds what it needs in
  the worker: the :class:`~documents.signing.SigningSetup` is cached per worker process, keyed
  by its :class:`SetupSpec`. The CA's files are shared through its file lock (``ca.py``);
* a worker that dies mid-job (killed, out of memory) or a job over the timeout gives
  :class:`WorkerProblem` (Chinese first), the pool is replaced and the next job runs in a fresh
  process. A job returns its result whole or nothing: the caller writes the document, never
  the worker, so nothing half-written is left.

Party signing runs here too: its pending signature lives between two requests as a JSON state
in the database (``PendingSignature.state``), never in memory. Kept in the caller's thread,
deliberately: issuing certificates and revoking (the CA's state file, quick), and a PKCS#11
session (a token session belongs to the process that opened it; the server signs with the
built-in CA's key files, so none is used here).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from .errors import DocumentError
from .render import RenderedDocument, render
from .signing import (
    SigningSetup,
    builtin_signer,
    finish_party_signing,
    prepare_party_signing,
    resume_party_signing,
    sign_document,
)
from .templates import Template
from .verify import DocumentState, VerifyReport, document_state, verify_pdf

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_TIMEOUT = 120.0  # seconds: a signing takes well under one; rendering a long record a few


class WorkerProblem(DocumentError):
    """A document job did not finish: its worker process died or it ran over the timeout.
    Nothing was written; the request may be repeated."""


@dataclass(frozen=True)
class SetupSpec:
    """What a worker rebuilds the :class:`SigningSetup` from (picklable, hashable)."""

    ca_dir: Path
    tsa_url: str | None = None


# one per worker process (never in the server's: jobs run in threads there only with 0 workers)
_SETUPS: dict[SetupSpec, SigningSetup] = {}
_SETUPS_LOCK = threading.Lock()


def setup_for(spec: SetupSpec) -> SigningSetup:
    from .ca import DeploymentCA

    with _SETUPS_LOCK:
        setup = _SETUPS.get(spec)
        if setup is None:
            setup = _SETUPS[spec] = SigningSetup(DeploymentCA(spec.ca_dir), tsa_url=spec.tsa_url)
        return setup


# -- the jobs (module-level functions: the worker imports them by name) ------------------------
def sign_builtin(
    spec: SetupSpec,
    pdf: bytes,
    field_name: str,
    role: str,
    signer_args: dict[str, str],
    appearance: Image.Image | None,
) -> tuple[bytes, int]:
    """Sign ``field_name`` with the built-in CA's officer or seal key: (the new PDF, serial)."""
    setup = setup_for(spec)
    signer = builtin_signer(setup, role, **signer_args)
    cert = signer.pyhanko_signer().signing_cert
    assert cert is not None  # a key file signer always has its certificate
    return sign_document(pdf, field_name, signer, setup, appearance), int(cert.serial_number)


def prepare_party(
    spec: SetupSpec,
    pdf: bytes,
    field_name: str,
    cert_der: bytes,
    appearance: Image.Image | None,
    mark: bytes | None,
) -> tuple[dict[str, Any], bytes]:
    """Reserve a party's signature: (the pending signature's state, the bytes the party's key
    signs). The state goes to the database; :func:`finish_party` takes it back, in any process."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(cert_der)
    pending = prepare_party_signing(pdf, field_name, cert, setup_for(spec), appearance, mark)
    return pending.state(pdf), pending.to_be_signed


def finish_party(spec: SetupSpec, state: dict[str, Any], pdf: bytes, signature: bytes) -> bytes:
    """Embed the party's signature in the signature :func:`prepare_party` reserved."""
    setup = setup_for(spec)
    return finish_party_signing(resume_party_signing(state, pdf, setup), signature, setup)


def render_job(template: Template, data: dict[str, Any], number: str) -> RenderedDocument:
    return render(template, data, number)


def state_job(pdf: bytes) -> DocumentState:
    return document_state(pdf)


def verify_job(spec: SetupSpec, pdf: bytes) -> VerifyReport:
    """Validate every signature of ``pdf`` against the deployment's root and its current CRL."""
    setup = setup_for(spec)
    return verify_pdf(pdf, [setup.ca.root], [setup.ca.crl()])


def pid_job(seconds: float = 0.0) -> int:
    """The worker's process ID, after ``seconds`` (tests: which process runs, a job to kill)."""
    if seconds:
        import time

        time.sleep(seconds)
    return os.getpid()


class DocumentPool:
    """A bounded pool of document worker processes, started on first use; see the module."""

    def __init__(self, workers: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, not {workers}")
        self.workers = workers
        self.timeout = timeout
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.replaced = 0  # pools replaced after a worker died or a job ran over

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise WorkerProblem("文书处理已关闭 / document processing is shut down")
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                # the fork server imports the library once; each worker then forks from it
                context.set_forkserver_preload([__name__])
                self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
            return self._executor

    def _replace(self, executor: ProcessPoolExecutor, reason: str) -> None:
        """Drop ``executor`` (killing its processes: a job over time may still run); the next
        job starts a fresh pool."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
                self.replaced += 1
        logger.warning("document worker pool replaced: %s", reason)
        # the stdlib offers no public kill before 3.14 (terminate_workers)
        for process in list(getattr(executor, "_processes", {}).values()):
            if process.is_alive():
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., T], *args: Any) -> tuple[ProcessPoolExecutor, Future[T]]:
        executor = self._current()
        try:
            return executor, executor.submit(fn, *args)
        except BrokenProcessPool:
            self._replace(executor, "broken before the job")
            executor = self._current()
            return executor, executor.submit(fn, *args)

    def _failed(self, executor: ProcessPoolExecutor, exc: BaseException) -> WorkerProblem:
        if isinstance(exc, BrokenProcessPool):
            self._replace(executor, f"a worker died: {exc}")
            return WorkerProblem(
                "文书处理进程意外退出，未保存任何内容，请重试 / the document worker process "
                "died; nothing was stored, please try again"
            )
        self._replace(executor, f"a job ran over {self.timeout} s")
        return WorkerProblem(
            f"文书处理超过 {self.timeout:g} 秒未完成，已中止，未保存任何内容 / the document "
            f"job took over {self.timeout:g} s and was stopped; nothing was stored"
        )

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker, waiting in this thread (blocking: not on the loop)."""
        if self.workers == 0:
            return fn(*args)
        executor, future = self._submit(fn, *args)
        try:
            return future.result(self.timeout)
        except (BrokenProcessPool, FutureTimeout) as exc:
            raise self._failed(executor, exc) from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker (in a thread with 0 workers) and await its result."""
        if self.workers == 0:
            return await asyncio.to_thread(fn, *args)
        # submitting starts processes on the first job (and after a replacement): in a thread
        executor, future = await asyncio.to_thread(self._submit, fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except (BrokenProcessPool, TimeoutError) as exc:
            raise self._failed(executor, exc) from None

    def pids(self) -> list[int]:
        """The worker processes' IDs (none before the first job)."""
        with self._lock:
            executor = self._executor
        if executor is None:
            return []
        return [p for p in getattr(executor, "_processes", {}) if isinstance(p, int)]

    async def close(self) -> None:
        """Stop the workers (waits for a running job); a second call returns at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)
