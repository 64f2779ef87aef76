"""benchmarks/bench_undo.py runs on a tiny log and its numbers are coherent (not a timing test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_undo.py"


def test_bench_undo_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "500", "2000", "--images", "40"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "undo.json").read_text())["rows"]
    assert [r["decisions"] for r in rows] == [500, 2000]
    for r in rows:
        assert r["undone_own"] == 1 and 1 <= r["undone_older"] <= 10  # its own label, then a bulk batch
        assert 0 < r["labeled"] <= 40 and all(r[k] >= 0 for k in ("status_s", "undo_own_s", "label_state_s"))
