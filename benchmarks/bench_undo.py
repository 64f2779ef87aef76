"""Undo and status time against the length of the decision log (10^4, 10^5, 10^6 decisions).

    python benchmarks/bench_undo.py                                  # 10^4, 10^5, 10^6 (minutes)
    python benchmarks/bench_undo.py --sizes 10000 --images 200       # smoke
    python benchmarks/bench_undo.py --code /path/to/older/checkout --sizes 10000 100000 --name undo_before

Each size gets a fresh project over ``--images`` tiny PNGs in 4 class folders (a quarter of them
seeds), scanned by the labeltool found on ``sys.path``. The log is then filled with SQL in bulk:
batches of 10 decisions (accept, reject, assign, pseudo, unlabel, and an undo of a random earlier
decision now and then), none with an actor (rows as an older labeltool wrote them). A session then
times, in this order: opening the project, a first ``label_state()`` (it reads a log nobody read
before: where labeltool keeps a per-group table, this is its one-pass rebuild), then after one
hand label ``label_state()`` and ``stats()`` (what ``labeltool status`` prints), ``undo()`` of
its own label, a second ``undo()``, which takes back the newest batch of the bulk log, and
``stats()`` again. One run each (the slow parts take
seconds, far above timer noise). Writes ``benchmarks/results/<--name>.json``.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import environment, table, write_json

ACTIONS = ("accept",) * 5 + ("reject",) * 2 + ("assign", "pseudo", "unlabel")
CLASSES = ("ant", "bee", "cat", "dog")


def make_folder(root: Path, n_images: int) -> Path:
    """``n_images`` distinct 16x16 PNGs, a quarter in class folders (seeds), the rest loose."""
    from PIL import Image

    folder = root / "images"
    for i in range(n_images):
        sub = folder / CLASSES[i % 4] if i < n_images // 4 else folder / "pool"
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (i % 251, (i // 251) % 251, (i // 63001) % 251)).save(sub / f"{i:07d}.png")
    return folder


def fill_log(db: Path, n_decisions: int, seed: int = 0) -> None:
    """Append ``n_decisions`` rows in batches of 10 straight into ``decisions`` (one transaction)."""
    rng = random.Random(seed)
    con = sqlite3.connect(str(db))
    image_ids = [int(r[0]) for r in con.execute("SELECT id FROM images WHERE status = 'ok'")]
    n_classes = int(con.execute("SELECT COUNT(*) FROM classes").fetchone()[0])
    first = int(con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM decisions").fetchone()[0])
    batch0 = int(con.execute("SELECT COALESCE(MAX(batch), 0) FROM decisions").fetchone()[0])
    rows: list[tuple[Any, ...]] = []
    targets: list[tuple[int, int]] = []  # (decision id, image id) of non-undo rows
    for k in range(n_decisions):
        did, batch = first + k, batch0 + 1 + k // 10
        if targets and rng.random() < 0.05:
            target, image = targets[rng.randrange(len(targets))]
            rows.append((did, image, None, "undo", None, batch, target, None, float(k)))
            continue
        action, image = rng.choice(ACTIONS), rng.choice(image_ids)
        cls = None if action == "unlabel" else rng.randrange(n_classes)
        rows.append((did, image, cls, action, 1, batch, None, rng.random() if action == "accept" else None, float(k)))
        targets.append((did, image))
    with con:
        con.executemany("""INSERT INTO decisions(id, image_id, class_id, action, round, batch, undoes, confidence, ts)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)
    con.close()


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_size(root: Path, folder: Path, n_decisions: int) -> dict[str, Any]:
    from labeltool.session import LabelingSession

    pdir = root / f"project-{n_decisions}"
    with LabelingSession.open(folder, project_dir=pdir) as s:
        db = Path(s.store.path)
    t0 = time.perf_counter()
    fill_log(db, n_decisions)
    fill_s = time.perf_counter() - t0
    s, open_s = timed(lambda: LabelingSession.open(folder, project_dir=pdir, create=False))
    with s:
        image_id = next(r.id for r in s.store.images() if r.seed_class_id is None)
        _, first_s = timed(s.label_state)
        s.assign(image_id, CLASSES[0])
        state, state_s = timed(s.label_state)
        _, stats_s = timed(s.stats)
        own, undo_s = timed(s.undo)
        older, undo2_s = timed(s.undo)
        _, stats2_s = timed(s.stats)
    return {"decisions": n_decisions, "fill_s": round(fill_s, 2), "open_s": round(open_s, 3),
            "first_label_state_s": round(first_s, 3), "label_state_s": round(state_s, 3),
            "status_s": round(stats_s, 3), "undo_own_s": round(undo_s, 4), "undo_older_s": round(undo2_s, 4),
            "status_after_undo_s": round(stats2_s, 3), "undone_own": len(own), "undone_older": len(older),
            "labeled": len(state.labels)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--images", type=int, default=2000, help="images in the project (default 2000)")
    ap.add_argument("--name", default="undo", help="result file name (default undo)")
    ap.add_argument("--code", type=Path, help="a checkout whose labeltool to time (default: this one)")
    args = ap.parse_args(argv)
    if args.code is not None:  # ahead of this checkout, which _common put first on sys.path
        sys.path.insert(0, str(args.code.resolve()))
    import labeltool

    print(f"labeltool from {Path(labeltool.__file__).parent}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-undo-") as tmp:
        root = Path(tmp)
        folder = make_folder(root, args.images)
        for n in args.sizes:
            rows.append(run_size(root, folder, n))
            print(rows[-1], flush=True)
    keys = ["decisions", "fill_s", "open_s", "first_label_state_s", "label_state_s", "status_s", "undo_own_s",
            "undo_older_s", "status_after_undo_s"]
    print(table(keys, [[r[k] for k in keys] for r in rows]))
    write_json(args.name, {"command": " ".join(["bench_undo.py", *sys.argv[1:]]), "labeltool": labeltool.__file__,
                           "images": args.images, "rows": rows, **environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
