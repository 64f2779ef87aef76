"""Merge protocol result files (runs made by separate commands, e.g. one seed at a time) into one.

    python benchmarks/merge_protocol.py paper_protocol_cpu_cifar96.json paper_protocol_cpu_cifar96_s12.json \\
        --into paper_protocol_cpu_cifar96

Names without a folder are read from the results folder; the merged file is written there
(``$BENCH_OUT`` or ``benchmarks/results``) under the ``--into`` name. Runs are keyed by
(dataset, mode, init, loss, variant, seed): a finished run replaces a partial one, and among runs
of the same standing the later file wins. The summary is recomputed, ``commands`` lists every
command that contributed, and the machine facts are the first file's (the files must come from
the same kind of device).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import out_dir, write_json
from bench_paper_protocol import summarize


def run_key(run: dict[str, Any]) -> tuple[str, ...]:
    t = run["task"]
    return (t["dataset"], t.get("mode", "head"), t["init"], t["loss"], t.get("variant", "paper"), str(t["seed"]))


def standing(run: dict[str, Any]) -> int:
    """2 finished, 1 partial, 0 anything else (failed, not started)."""
    status = str(run.get("status", ""))
    return 2 if status == "done" else 1 if status.startswith("partial") else 0


def merge(files: list[dict[str, Any]]) -> dict[str, Any]:
    """One result dict from several ``bench_paper_protocol`` result dicts (in order)."""
    if not files:
        raise ValueError("nothing to merge")
    devices = {f.get("device_name") or f.get("device") for f in files}
    if len(devices) > 1:
        raise ValueError(f"the files come from different devices {sorted(map(str, devices))}; merge per device")
    runs: dict[tuple[str, ...], dict[str, Any]] = {}
    unfinished: dict[tuple[str, ...], dict[str, Any]] = {}
    commands: list[str] = []
    for f in files:
        commands += f.get("commands") or [f["command"]]
        for r in f["runs"]:
            k = run_key(r)
            if k not in runs or standing(r) >= standing(runs[k]):
                runs[k] = r
        for u in f.get("unfinished", []):
            unfinished[run_key(u)] = u
    merged = {**files[0], "commands": commands, "runs": list(runs.values()),
              "unfinished": [u for k, u in unfinished.items() if k not in runs],
              "seeds": sorted({int(k[-1]) for k in runs}),
              "elapsed_s": round(sum(float(f.get("elapsed_s", 0.0)) for f in files), 1)}
    merged["summary"] = summarize(merged["runs"])
    return merged


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--into", required=True, help="name of the merged result file (in the results folder)")
    args = ap.parse_args(argv)
    paths = [p if p.parent != Path() else out_dir() / p for p in args.files]
    merged = merge([json.loads(p.read_text()) for p in paths])
    path = write_json(Path(args.into).name.removesuffix(".json"), merged)
    print(f"{path}: {len(merged['runs'])} runs from {len(paths)} files, seeds {merged['seeds']}")


if __name__ == "__main__":
    main()
