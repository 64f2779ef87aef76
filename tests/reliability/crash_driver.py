"""Work loops for the crash and concurrency tests, run in processes that the tests SIGKILL.

Run as ``python crash_driver.py``: a small fork server. It imports labeltool once, prints
``server-ready``, then reads commands on stdin, one JSON object per line:

- ``{"cmd": "start", "job": NAME, "args": {...}}`` forks a worker that runs ``JOBS[NAME]``;
  the server answers ``started <pid>``;
- ``{"cmd": "wait", "pid": PID}`` reaps that worker and answers ``exit <pid> <status>``.

Workers print ``<pid> <tag> <json>`` lines: ``ready`` once set up, ``ack`` after every store
write has returned (so an acknowledged write is one the user would have seen confirmed),
``done`` at the end and ``error`` if anything raised. Each line is one ``os.write`` (atomic on a
pipe), so lines of concurrent workers never interleave. Forking from a warm server means every
kill hits a fresh process without paying for the torch import again.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labeltool.config import TrainConfig
from labeltool.io.export import export_project  # noqa: F401 - imported before forking
from labeltool.session import LabelingSession


def emit(tag: str, payload: Any = None) -> None:
    """One atomic output line for the test to read."""
    os.write(1, f"{os.getpid()} {tag} {json.dumps(payload)}\n".encode())


def job_accept(args: dict[str, Any]) -> None:
    """Accept pending suggestions in batches (sometimes undoing the last batch), forever."""
    rng = random.Random(args["seed"])
    with LabelingSession.open(args["root"], scan=False) as s:
        emit("ready")
        while True:
            pending = s.pending_suggestions()
            if len(pending) >= args["batch"] and rng.random() > 0.25:
                chosen = rng.sample(pending, args["batch"])
                ids = s.accept(chosen)
                emit("ack", {"op": "accept", "ids": ids, "rows": [[c.image_id, c.class_id] for c in chosen]})
            else:
                emit("ack", {"op": "undo", "undone": s.undo()})


def job_train(args: dict[str, Any]) -> None:
    """Train rounds back to back, recording a hand label between rounds. The labels go to the
    first few images only, so the pool keeps unlabeled images however many rounds run before the
    kill (fast rounds once warm: the whole pool was labeled by hand in one of four runs)."""
    with LabelingSession.open(args["root"], scan=False) as s:
        images = sorted(s.image_rows())[:4]
        emit("ready")
        for i in range(10_000):
            m = s.train_round(TrainConfig(epochs=2, min_steps=args["steps"], max_steps=args["steps"], seed=i))
            emit("ack", {"op": "round", "round": m["round"]})
            ids = s.assign(images[i % len(images)], s.classes[i % len(s.classes)])
            emit("ack", {"op": "assign", "ids": ids})


def job_embed(args: dict[str, Any]) -> None:
    """Embed the project, acknowledging every batch written to the feature cache."""
    with LabelingSession.open(args["root"], scan=False) as s:
        s.backbone()  # built before "ready", so that the kill lands in the extraction itself
        emit("ready")
        s.embed(lambda done, total: emit("ack", {"op": "embed", "done": done, "total": total}),
                device="cpu", rescan=False, num_workers=0)
        emit("done")


def job_export(args: dict[str, Any]) -> None:
    """Export the project over and over to the same target (every third one with the model)."""
    with LabelingSession.open(args["root"], scan=False) as s:
        emit("ready")
        for i in range(10_000):
            s.export(args["out"], overwrite=True, model=(i % 3 == 1) and args["model"])
            emit("ack", {"op": "export", "n": i})


def job_record(args: dict[str, Any]) -> None:
    """Record decisions as fast as possible once ``go`` exists; then, after the peer is done
    too, report every decision this process sees (its view after a refresh)."""
    go, mine, peer = Path(args["go"]), Path(args["done"]), Path(args["peer_done"])
    with LabelingSession.open(args["root"], scan=False) as s:
        images = sorted(s.image_rows())
        emit("ready")
        rng = random.Random(args["offset"])
        while not go.exists():
            time.sleep(0.005)
        emit("started", time.time())
        for i in range(args["n"]):
            image = images[(i * 7 + args["offset"]) % len(images)]
            t0 = time.perf_counter()
            try:
                if i % 3 == 2:
                    ids = s.assign(image, f"{args['tag']}-class")  # also adds a class: a second kind of write
                else:
                    ids = s.record([{"image_id": image, "class_id": i % len(s.classes), "action": "assign"}])
            except Exception as e:  # reported, never retried: the test fails on any
                emit("error", f"{type(e).__name__}: {e}")
                continue
            emit("ack", {"op": "record", "ids": ids, "seconds": time.perf_counter() - t0})
            time.sleep(rng.uniform(0.0, 0.01))  # a click now and then, not a tight loop
        emit("finished", time.time())
        mine.touch()
        while not peer.exists():
            time.sleep(0.01)
        emit("seen", {"ids": [d.id for d in s.store.decisions()], "labels": len(s.label_state().labels)})


def job_long_train(args: dict[str, Any]) -> None:
    """One long training round; ``training`` is printed once the optimiser is running."""
    started = False

    def progress(step: int, total: int, loss: float) -> None:
        nonlocal started
        if not started:
            started = True
            emit("training", {"step": step, "total": total})

    with LabelingSession.open(args["root"], scan=False) as s:
        emit("ready")
        t0 = time.perf_counter()
        m = s.train_round(TrainConfig(epochs=1, min_steps=args["steps"], max_steps=args["steps"]), progress)
        emit("trained", {"round": m["round"], "seconds": time.perf_counter() - t0})


JOBS: dict[str, Callable[[dict[str, Any]], None]] = {
    "accept": job_accept, "train": job_train, "embed": job_embed, "export": job_export,
    "record": job_record, "long_train": job_long_train,
}


def _worker(job: str, args: dict[str, Any]) -> None:
    code = 0
    try:
        JOBS[job](args)
    except BaseException as e:  # noqa: BLE001 - reported to the test, which fails on it
        emit("error", "".join(traceback.format_exception_only(type(e), e)).strip())
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Read commands on stdin until it closes."""
    os.write(1, b"server-ready\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "start":
            pid = os.fork()
            if pid == 0:
                _worker(cmd["job"], cmd["args"])
            os.write(1, f"started {pid}\n".encode())
        elif cmd["cmd"] == "wait":
            _, status = os.waitpid(cmd["pid"], 0)
            os.write(1, f"exit {cmd['pid']} {status}\n".encode())


if __name__ == "__main__":
    serve()
