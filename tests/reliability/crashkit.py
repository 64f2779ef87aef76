"""Test-side helpers for the crash and concurrency tests: the fork-server client, kill counts,
the small embedded project and the statistics written to docs/RELIABILITY.md."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).with_name("crash_driver.py")
REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("LABELTOOL_CRASH_SEED", "20240611"))


def kills(default: int) -> int:
    """Kills per scenario: ``LABELTOOL_CRASH_KILLS`` when set (benchmark runs), else ``default``."""
    return int(os.environ.get("LABELTOOL_CRASH_KILLS", default))


class ForkServer:
    """Client of ``crash_driver.py``: start workers, read their lines, kill and reap them."""

    def __init__(self, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=env, cwd=REPO,
        )
        self.lines: dict[int, list[tuple[str, Any]]] = defaultdict(list)
        self._live: set[int] = set()  # started and not reaped yet
        self._server: queue.Queue[str] = queue.Queue()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        if self._server.get(timeout=180) != "server-ready":
            raise RuntimeError(f"fork server did not start; see {log}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().rstrip("\n")
            head, _, rest = line.partition(" ")
            if head.isdigit():
                tag, _, payload = rest.partition(" ")
                with self._cond:
                    self.lines[int(head)].append((tag, json.loads(payload) if payload else None))
                    self._cond.notify_all()
            else:
                self._server.put(line)

    def _send(self, cmd: dict[str, Any]) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self._server.get(timeout=120)

    def start(self, job: str, **args: Any) -> int:
        """Fork a worker running ``job``; returns its pid."""
        answer = self._send({"cmd": "start", "job": job, "args": args})
        assert answer.startswith("started "), answer
        pid = int(answer.split()[1])
        self._live.add(pid)
        return pid

    def wait_for(self, pid: int, tag: str, timeout: float = 120.0, match: Callable[[Any], bool] | None = None) -> Any:
        """Block until ``pid`` printed a ``tag`` line (whose payload satisfies ``match``, if
        given); fails early on an ``error`` line."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, payload in self.lines[pid]:
                    if t == tag and (match is None or match(payload)):
                        return payload
                    if t == "error":
                        raise AssertionError(f"worker {pid} failed: {payload}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"worker {pid} printed no {tag!r} line in {timeout} s")
                self._cond.wait(left)

    def has(self, pid: int, tag: str) -> bool:
        with self._cond:
            return any(t == tag for t, _ in self.lines[pid])

    def reap(self, pid: int) -> int:
        """Wait for the worker to end; returns its wait status. Every line it printed is read
        by then (the server reports the exit only after the worker is gone)."""
        answer = self._send({"cmd": "wait", "pid": pid})
        assert answer.startswith(f"exit {pid} "), answer
        self._live.discard(pid)
        return int(answer.split()[2])

    def kill(self, pid: int) -> int:
        """SIGKILL the worker and reap it; returns its wait status."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.reap(pid)

    def acks(self, pid: int) -> list[Any]:
        with self._cond:
            return [p for t, p in self.lines[pid] if t == "ack"]

    def errors(self, pid: int) -> list[Any]:
        with self._cond:
            return [p for t, p in self.lines[pid] if t == "error"]

    def close(self) -> None:
        """Kill the workers a failed test left running, then stop the server."""
        for pid in sorted(self._live):
            self.kill(pid)
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def small_sample(dest: Path, sample: Path, classes: tuple[str, ...] = ("bag", "coat", "dress"),
                 per_class: int = 5, unlabeled: int = 30) -> Path:
    """A few seed images per class and part of the unlabeled pool of the bundled sample (or of
    a copy of it: only images are copied, never a project folder)."""
    for c in (*classes, "unlabeled"):
        (dest / c).mkdir(parents=True)
        for p in sorted((sample / c).glob("*.png"))[: unlabeled if c == "unlabeled" else per_class]:
            shutil.copy2(p, dest / c / p.name)
    return dest


def write_stats(stats: dict[str, Any]) -> None:
    """Write the collected numbers to ``$LABELTOOL_RELIABILITY_STATS`` when it is set."""
    target = os.environ.get("LABELTOOL_RELIABILITY_STATS")
    if target:
        Path(target).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
