"""The background embedding job's progress file: written by the job, read (and checked) by others."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from labeltool.io import embed_job
from labeltool.io.embed_job import JobProgress, foreground, is_paused, job_file, read_job


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_progress_written_by_the_job_is_what_a_reader_sees(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embed_job, "_alive", lambda pid: True)
    monkeypatch.setattr(embed_job, "WRITE_EVERY_S", 0.0)
    progress = JobProgress(tmp_path)
    assert read_job(tmp_path).line() == "embedding in the background: starting"  # type: ignore[union-attr]
    progress(100, 400)
    status = read_job(tmp_path)
    assert status is not None and status.running and (status.done, status.total) == (100, 400)
    assert status.line().startswith("embedding in the background: 100/400 image(s), ")
    progress.finish(runtime="openvino")
    status = read_job(tmp_path)
    assert status is not None and status.finished and not status.running and status.runtime == "openvino"
    assert status.line() == "background embedding finished: 100 image(s)"


def test_progress_is_written_at_most_every_so_often_and_always_at_the_end(tmp_path: Path) -> None:
    progress = JobProgress(tmp_path)
    progress(0, 10)  # the total is news: written at once
    assert read_job(tmp_path).total == 10  # type: ignore[union-attr]
    progress(1, 10)  # within WRITE_EVERY_S of the last write: kept in memory only
    assert read_job(tmp_path).done == 0  # type: ignore[union-attr]
    progress(10, 10)
    assert read_job(tmp_path).done == 10  # type: ignore[union-attr]


def test_a_job_that_died_reads_as_stopped_with_how_to_resume(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embed_job, "WRITE_EVERY_S", 0.0)
    progress = JobProgress(tmp_path)
    progress(40, 100)
    data = json.loads(job_file(tmp_path).read_text())
    job_file(tmp_path).write_text(json.dumps({**data, "pid": _dead_pid()}))
    status = read_job(tmp_path)
    assert status is not None and not status.running and not status.finished
    assert "stopped at 40/100" in status.line() and "labeltool embed" in status.line()


def test_a_live_process_that_is_not_a_labeltool_job_does_not_count_as_the_job(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        JobProgress(tmp_path)
        data = json.loads(job_file(tmp_path).read_text())
        job_file(tmp_path).write_text(json.dumps({**data, "pid": other.pid}))
        assert read_job(tmp_path).running is False  # type: ignore[union-attr]
    finally:
        other.kill()
        other.wait()


def test_a_failed_job_reports_its_error_and_a_missing_or_torn_file_reads_as_none(tmp_path: Path) -> None:
    assert read_job(tmp_path) is None
    JobProgress(tmp_path).finish(error="OSError: disk full")
    assert read_job(tmp_path).line() == "background embedding failed: OSError: disk full"  # type: ignore[union-attr]
    job_file(tmp_path).write_text('{"pid": 1, "star')
    assert read_job(tmp_path) is None


def test_stop_ends_the_running_job_and_reports_whether_one_ran(tmp_path: Path) -> None:
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "labeltool", "embed"])
    try:
        cmdline = Path(f"/proc/{job.pid}/cmdline")
        deadline = time.monotonic() + 10
        while cmdline.exists() and b"labeltool" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has exec'd: before, it still shows the test's command line
        JobProgress(tmp_path)
        data = json.loads(job_file(tmp_path).read_text())
        job_file(tmp_path).write_text(json.dumps({**data, "pid": job.pid}))
        assert read_job(tmp_path).running  # type: ignore[union-attr]
        assert embed_job.stop_job(tmp_path) is True
        assert job.wait(timeout=10) == -15
        assert embed_job.stop_job(tmp_path) is False
    finally:
        job.kill()
        job.wait()


def _running_job(tmp_path: Path, monkeypatch) -> JobProgress:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embed_job, "_alive", lambda pid: True)
    monkeypatch.setattr(embed_job, "WRITE_EVERY_S", 0.0)
    monkeypatch.setattr(embed_job, "PAUSE_POLL_S", 0.01)
    progress = JobProgress(tmp_path)
    progress(0, 10)
    return progress


def test_the_job_waits_between_batches_while_a_round_runs_in_the_foreground(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    progress = _running_job(tmp_path, monkeypatch)
    with foreground(tmp_path) as held:
        assert held and is_paused(tmp_path)
        batch = threading.Thread(target=progress, args=(1, 10))
        batch.start()
        batch.join(0.3)
        assert batch.is_alive()  # the next batch has not started
        status = read_job(tmp_path)
        assert status is not None and status.paused and "waiting while a round runs" in status.line()
    batch.join(5)
    assert not batch.is_alive() and not is_paused(tmp_path)
    assert not read_job(tmp_path).paused  # type: ignore[union-attr]


def test_a_pause_left_by_a_process_that_died_lapses(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    progress = _running_job(tmp_path, monkeypatch)
    embed_job.pause_file(tmp_path).write_text(repr(time.time() + 0.2))  # nobody renews it
    t = time.monotonic()
    progress(1, 10)
    assert 0.1 < time.monotonic() - t < 5 and not is_paused(tmp_path)


def test_nested_foreground_blocks_share_one_pause_renewed_while_held(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _running_job(tmp_path, monkeypatch)
    with foreground(tmp_path, lease=0.15):
        with foreground(tmp_path, lease=0.15):
            pass
        time.sleep(0.4)  # past the first lease: renewed by the outer block
        assert is_paused(tmp_path)
    assert not embed_job.pause_file(tmp_path).exists()


def test_without_a_running_job_the_foreground_writes_nothing(tmp_path: Path) -> None:
    with foreground(tmp_path) as held:
        assert not held and not embed_job.pause_file(tmp_path).exists()


def test_a_job_starting_during_a_round_waits_before_loading_its_model(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embed_job, "PAUSE_POLL_S", 0.01)
    embed_job.pause_file(tmp_path).write_text(repr(time.time() + 0.2))
    t = time.monotonic()
    JobProgress(tmp_path)
    assert time.monotonic() - t > 0.1 and not is_paused(tmp_path)


def test_a_pause_that_cannot_be_written_does_not_stop_the_round(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _running_job(tmp_path, monkeypatch)

    def refuse(self: Path, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "read-only", str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    with foreground(tmp_path) as held:
        assert held and not is_paused(tmp_path)  # the round runs; the job simply is not held
