"""Document work in worker processes (documents/pool.py): real processes from the fork server,
real PDFs, real signatures; a worker killed with SIGKILL, a job over its timeout, the pool closed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from control.config import ConfigError, ServerConfig
from control.documents.api import refused
from documents import MissingFields, load_templates
from documents.appearance import name_card
from documents.pool import (
    DocumentPool,
    SetupSpec,
    WorkerProblem,
    pid_job,
    render_job,
    sign_builtin,
    state_job,
    verify_job,
)
from documents.samples import sample
from documents.seal import draw_seal

TEMPLATES = load_templates()
DEPARTMENT = "某市公安局交通警察支队一大队"


def _gone(pid: int) -> bool:
    """The process has exited and been reaped (or is a zombie: exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith(("Z", "X"))
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or during the read
        return True


def _exits(pid: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(pid)


async def _wait_for_worker(pool: DocumentPool) -> int:
    for _ in range(600):
        pids = pool.pids()
        if pids:
            return pids[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no worker process started")


async def test_signing_and_validation_run_in_another_process(tmp_path: Path) -> None:
    pool = DocumentPool(1)
    assert pool.pids() == []  # lazy: nothing before the first job
    spec = SetupSpec(tmp_path / "keys")
    try:
        worker = await pool.run(pid_job)
        assert worker != os.getpid() and pool.pids() == [worker]
        template = TEMPLATES["determination_ordinary"]
        doc = await pool.run(
            render_job, template, sample("determination_ordinary"), "某公交认〔2026〕第0001号"
        )
        officer = {"officer_id": "o1", "name": "王警官", "department": DEPARTMENT}
        pdf, officer_serial = await pool.run(
            sign_builtin, spec, doc.pdf, "officer-o1", "officer", officer, name_card(["王警官"])
        )
        half = await pool.run(state_job, pdf)
        assert half.signed == ["officer-o1"] and not half.effective
        seal = {"brigade": "B01", "department": DEPARTMENT}
        pdf, seal_serial = await pool.run(
            sign_builtin, spec, pdf, "seal-department", "seal", seal, draw_seal(DEPARTMENT)
        )
        assert officer_serial != seal_serial
        report = await pool.run(verify_job, spec, pdf)
        assert report.ok, report.problems
        assert report.state is not None and report.state.effective
        assert pool.pids() == [worker]  # one worker did it all, and kept its setup
    finally:
        await pool.close()


async def test_refusals_come_back_whole(tmp_path: Path) -> None:
    pool = DocumentPool(1)
    try:
        with pytest.raises(MissingFields) as missing:
            await pool.run(render_job, TEMPLATES["determination_ordinary"], {}, "x")
        assert missing.value.missing and "缺少必填字段" in str(missing.value)
    finally:
        await pool.close()


async def test_a_killed_worker_gives_a_clear_error_and_the_next_job_runs(tmp_path: Path) -> None:
    pool = DocumentPool(1)
    try:
        job = asyncio.ensure_future(pool.run(pid_job, 60.0))
        worker = await _wait_for_worker(pool)
        await asyncio.sleep(0.2)  # the job has been handed to it
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(WorkerProblem) as problem:
            await job
        assert str(problem.value).startswith("文书处理进程意外退出")
        assert "nothing was stored" in str(problem.value)
        answer = refused(problem.value)
        assert answer.status == 503 and "document_worker_failed" in (answer.text or "")
        assert pool.replaced == 1
        fresh = await pool.run(pid_job)
        assert fresh not in (worker, os.getpid())
    finally:
        await pool.close()


async def test_a_job_over_the_timeout_is_stopped(tmp_path: Path) -> None:
    pool = DocumentPool(1, timeout=3.0)
    try:
        await pool.run(pid_job)  # the start-up is not counted against the slow job below
        worker = pool.pids()[0]
        with pytest.raises(WorkerProblem, match="超过 3 秒"):
            await pool.run(pid_job, 60.0)
        assert await asyncio.to_thread(_exits, worker)  # killed, not left running the job
        assert await pool.run(pid_job) != worker
    finally:
        await pool.close()


async def test_close_stops_the_workers_and_refuses_later_jobs() -> None:
    pool = DocumentPool(2)
    await asyncio.gather(pool.run(pid_job, 0.3), pool.run(pid_job, 0.3))
    pids = pool.pids()
    assert pids and os.getpid() not in pids
    await pool.close()
    assert all(_gone(p) for p in pids)
    await pool.close()  # a second close returns at once
    with pytest.raises(WorkerProblem, match="已关闭"):
        await pool.run(pid_job)


async def test_no_workers_runs_in_a_thread_of_this_process() -> None:
    pool = DocumentPool(0)
    assert await pool.run(pid_job) == os.getpid()
    assert pool.pids() == []
    await pool.close()


def test_the_setting_is_checked() -> None:
    assert ServerConfig().document_workers == 1
    with pytest.raises(ConfigError, match=r"server\.document_workers"):
        ServerConfig(document_workers=-1)


async def test_the_app_owns_its_pool_and_closes_it(tmp_path: Path) -> None:
    from control.appkeys import DOCS
    from tests.conftest import make_config, start_server

    server = await start_server(make_config(tmp_path))
    try:
        pool = server.app[DOCS].pool
        assert pool.workers == 1 and pool.pids() == []  # nothing started for a server at rest
        worker = await pool.run(pid_job)
        assert worker != os.getpid()
    finally:
        await server.runner.cleanup()
    assert await asyncio.to_thread(_exits, worker)  # the app's close stopped it
    with pytest.raises(WorkerProblem):
        await pool.run(pid_job)
