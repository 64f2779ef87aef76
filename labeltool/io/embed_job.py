"""Embedding in the background: a ``labeltool embed`` process of its own, and its progress file.

The app (or ``labeltool embed --background``) embeds the labeled images and a first sample itself,
then starts this process for the rest and stays usable: the process appends to the same feature
cache (appends are locked, readers pick them up on refresh), so every round's pool is what has
landed so far. The process runs at a lower CPU priority, and it waits between batches while a
round runs in the foreground (:func:`foreground`): a lower priority alone does not keep it off
the cores, and a first round whose thread pool shared two cores with the job's took 22 s instead
of 5 s. It writes ``cache/embed_job.json`` as it goes; a killed job leaves its batches in the
cache and the next start resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

JOB_FILE = "embed_job.json"
JOB_LOG = "embed_job.log"
WRITE_EVERY_S = 1.0  # progress-file writes at most this often
NICENESS = 10
PAUSE_FILE = "embed_job.pause"  # holds the time (epoch seconds) until which the job waits
PAUSE_LEASE_S = 15.0  # a foreground round renews its pause this long ahead (a dead app's pause lapses)
PAUSE_POLL_S = 0.2


@dataclass(frozen=True)
class EmbedJobStatus:
    """What a background embedding process reported last.

    ``done`` of ``total`` images embedded by this process (the ones already cached when it started
    are not counted); ``running`` is checked against the process table when read; ``error`` is
    the message of a job that failed.
    """

    pid: int
    started: float
    updated: float
    done: int = 0
    total: int = 0
    finished: bool = False
    error: str | None = None
    runtime: str = ""
    paused: bool = False
    running: bool = False

    @property
    def rate(self) -> float | None:
        """Images per second so far (None before the first batch)."""
        elapsed = self.updated - self.started
        return self.done / elapsed if self.done and elapsed > 0 else None

    def line(self) -> str:
        """One line for ``labeltool status`` and the app's sidebar."""
        if self.error:
            return f"background embedding failed: {self.error}"
        if self.finished:
            return f"background embedding finished: {self.done} image(s)"
        rate = self.rate
        speed = "" if rate is None else f", {rate:.0f} img/s, about {_minutes((self.total - self.done) / rate)} left"
        if self.running and not self.total:
            return "embedding in the background: starting"
        if self.running and self.paused:
            return f"embedding in the background: {self.done}/{self.total} image(s), waiting while a round runs"
        if self.running:
            return f"embedding in the background: {self.done}/{self.total} image(s){speed}"
        return (f"background embedding stopped at {self.done}/{self.total} image(s) "
                "(run `labeltool embed` or reopen the app to resume)")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def job_file(cache_dir: Path) -> Path:
    return cache_dir / JOB_FILE


def _alive(pid: int) -> bool:
    """A live process with this pid that is a labeltool embed (guards against a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"labeltool" in cmdline.read_bytes()
        except OSError:
            return True
    return True


def read_job(cache_dir: Path) -> EmbedJobStatus | None:
    """The last status written by a background job in ``cache_dir`` (None when there never was one
    or its file is unreadable), with ``running`` checked now."""
    try:
        data = json.loads(job_file(cache_dir).read_text())
        fields = {k: data[k] for k in EmbedJobStatus.__dataclass_fields__ if k in data and k != "running"}
        status = EmbedJobStatus(**fields)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    running = not status.finished and not status.error and _alive(status.pid)
    return EmbedJobStatus(**{**asdict(status), "running": running})


class JobProgress:
    """The job's side: a progress callback ``(done, total)`` that keeps ``cache/embed_job.json``
    current (written atomically, at most every :data:`WRITE_EVERY_S` seconds). Made before the
    job loads its model and called between batches, it waits while a round holds the pause."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = job_file(cache_dir)
        self.status = EmbedJobStatus(pid=os.getpid(), started=time.time(), updated=time.time())
        self._written = 0.0
        self._write()
        self._wait_for_foreground()  # before the job loads its model: a round that just started goes first

    def __call__(self, done: int, total: int) -> None:
        first = total != self.status.total  # the total is known: readers stop saying "starting"
        self.status = EmbedJobStatus(**{**asdict(self.status), "done": done, "total": total, "updated": time.time()})
        if first or time.monotonic() - self._written >= WRITE_EVERY_S or done >= total:
            self._write()
        if done < total:
            self._wait_for_foreground()

    def _wait_for_foreground(self) -> None:
        """Between batches: wait while a foreground round holds the pause (status says so)."""
        cache_dir = self.path.parent
        if not is_paused(cache_dir):
            return
        self.status = EmbedJobStatus(**{**asdict(self.status), "paused": True})
        self._write()
        while is_paused(cache_dir):
            time.sleep(PAUSE_POLL_S)
        self.status = EmbedJobStatus(**{**asdict(self.status), "paused": False})
        self._write()

    def finish(self, error: str | None = None, runtime: str = "") -> None:
        """Record the end of the job: ``error`` when it failed, else which ``runtime`` ran."""
        self.status = EmbedJobStatus(**{**asdict(self.status), "finished": error is None, "error": error,
                                        "runtime": runtime or self.status.runtime, "updated": time.time()})
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        data = asdict(self.status)
        data.pop("running")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)
        self._written = time.monotonic()


def start_job(image_root: Path, project_dir: Path, cache_dir: Path, *, runtime: str = "auto") -> EmbedJobStatus:
    """Start a background ``labeltool embed`` for the project unless one is running; returns its
    status. Its output goes to ``cache/embed_job.log``."""
    current = read_job(cache_dir)
    if current is not None and current.running:
        return current
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "labeltool.cli", "embed", str(image_root), "--project-dir", str(project_dir),
               "--job", "--runtime", runtime]
    with open(cache_dir / JOB_LOG, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                preexec_fn=_lower_priority if hasattr(os, "nice") else None)
    now = time.time()
    status = EmbedJobStatus(pid=proc.pid, started=now, updated=now, running=True)
    written = read_job(cache_dir)
    if written is None or written.pid != proc.pid:  # so a read before the child's first write sees it
        tmp = job_file(cache_dir).with_name(f"{JOB_FILE}.{os.getpid()}.tmp")
        data = asdict(status)
        data.pop("running")
        tmp.write_text(json.dumps(data))
        tmp.replace(job_file(cache_dir))
    return status


def _lower_priority() -> None:
    os.nice(NICENESS)


def stop_job(cache_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the running job (its cached batches stay); True when one was running."""
    status = read_job(cache_dir)
    if status is None or not status.running:
        return False
    os.kill(status.pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(status.pid):
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------------------- foreground pause
def is_paused(cache_dir: Path) -> bool:
    """Whether a foreground round asked the job in ``cache_dir`` to wait (and its lease holds)."""
    try:
        return float(pause_file(cache_dir).read_text()) > time.time()
    except (OSError, ValueError):
        return False


def pause_file(cache_dir: Path) -> Path:
    return cache_dir / PAUSE_FILE


def _write_pause(cache_dir: Path, until: float) -> None:
    """Best effort: a pause that cannot be written (a read-only cache) leaves the job running and
    the round goes on sharing the cores, as it did before there was a pause."""
    path = pause_file(cache_dir)
    tmp = path.with_name(f"{PAUSE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(repr(until))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


_holders: dict[Path, int] = {}  # cache dir → foreground blocks open in this process
_holders_lock = threading.Lock()


@contextmanager
def foreground(cache_dir: Path, lease: float = PAUSE_LEASE_S) -> Iterator[bool]:
    """Hold the background job in ``cache_dir`` between batches for the block (yields whether one
    was running). A thread renews the pause every ``lease / 3`` seconds, so a process that dies
    mid-round lets the job go on within ``lease`` seconds; nested blocks share one pause."""
    job = read_job(cache_dir)
    if job is None or not job.running:
        yield False
        return
    key = Path(cache_dir).resolve()
    with _holders_lock:
        _holders[key] = _holders.get(key, 0) + 1
        outer = _holders[key] == 1
    done = threading.Event()
    renew = None
    if outer:
        _write_pause(cache_dir, time.time() + lease)

        def keep() -> None:
            while not done.wait(lease / 3):
                _write_pause(cache_dir, time.time() + lease)

        renew = threading.Thread(target=keep, name="labeltool-foreground", daemon=True)
        renew.start()
    try:
        yield True
    finally:
        done.set()
        if renew is not None:
            renew.join()
        with _holders_lock:
            _holders[key] -= 1
            last = _holders[key] == 0
            if last:
                del _holders[key]
        if last:
            with suppress(OSError):
                pause_file(cache_dir).unlink(missing_ok=True)
