"""Merge result files of one benchmark run as separate commands (e.g. one seed at a time) into one.

    python benchmarks/merge_results.py paper_protocol_cpu_cifar96.json paper_protocol_cpu_cifar96_s12.json \\
        --into paper_protocol_cpu_cifar96

Works for ``bench_paper_protocol`` files (runs keyed by dataset, mode, init, loss, variant, seed)
and ``bench_human_cost`` files (keyed by dataset, method, seed, walk temperature, pool, image size).
Names without a folder are read from the results folder; the merged file is written there
(``$BENCH_OUT`` or ``benchmarks/results``) under the ``--into`` name. A finished run replaces a
partial one, a partial run that got further replaces one that got less far, and among runs of
the same standing the later file wins. Summaries (and the
human-cost curves PNG) are recomputed, ``commands`` lists every command that contributed, and the
machine facts are the first file's (the files must come from the same kind of device).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import out_dir, write_json
from bench_human_cost import plot_curves
from bench_paper_protocol import summarize


def run_key(run: dict[str, Any]) -> tuple[str, ...]:
    """What identifies a run across files (protocol or human-cost task)."""
    t = run["task"]
    if "method" in t:
        keys = ("dataset", "method", "seed", "walk_temperature", "pool", "image_size")
        return tuple(str(t.get(k)) for k in keys)
    return (t["dataset"], t.get("mode", "head"), t["init"], t["loss"], t.get("variant", "paper"), str(t["seed"]))


def standing(run: dict[str, Any]) -> tuple[int, int]:
    """(2 finished, 1 partial, 0 anything else (failed, not started); iterations reached)."""
    status = str(run.get("status", ""))
    return 2 if status == "done" else 1 if status.startswith("partial") else 0, len(run.get("iterations") or [])


def merge(files: list[dict[str, Any]]) -> dict[str, Any]:
    """One result dict from several result dicts of the same benchmark (in order)."""
    if not files:
        raise ValueError("nothing to merge")
    kinds = {"runs" if "runs" in f else "results" if "results" in f else "?" for f in files}
    if len(kinds) != 1 or "?" in kinds:
        raise ValueError("the files must all be protocol results ('runs') or all human-cost results ('results')")
    (field,) = kinds
    devices = {f.get("device_name") or f.get("device") for f in files}
    if len(devices) > 1:
        raise ValueError(f"the files come from different devices {sorted(map(str, devices))}; merge per device")
    runs: dict[tuple[str, ...], dict[str, Any]] = {}
    unfinished: dict[tuple[str, ...], dict[str, Any]] = {}
    commands: list[str] = []
    for f in files:
        commands += f.get("commands") or [f["command"]]
        for r in f[field]:
            k = run_key(r)
            if k not in runs or standing(r) >= standing(runs[k]):
                runs[k] = r
        for u in f.get("unfinished", []):
            unfinished[run_key(u)] = u
    merged = {**files[0], "commands": commands, field: list(runs.values()),
              "unfinished": [u for k, u in unfinished.items() if k not in runs],
              "seeds": sorted({int(r["task"]["seed"]) for r in runs.values()}),
              "elapsed_s": round(sum(float(f.get("elapsed_s", 0.0)) for f in files), 1)}
    if field == "runs":
        merged["summary"] = summarize(merged["runs"])
    return merged


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--into", required=True, help="name of the merged result file (in the results folder)")
    args = ap.parse_args(argv)
    paths = [p if p.parent != Path() else out_dir() / p for p in args.files]
    merged = merge([json.loads(p.read_text()) for p in paths])
    name = Path(args.into).name.removesuffix(".json")
    path = write_json(name, merged)
    runs = merged.get("runs") or merged["results"]
    print(f"{path}: {len(runs)} runs from {len(paths)} files, seeds {merged['seeds']}")
    if "results" in merged:
        png = plot_curves(merged["results"], path.with_name(f"{name}_curves.png"))
        print(f"curves: {png or 'not drawn (matplotlib missing)'}")


if __name__ == "__main__":
    main()
