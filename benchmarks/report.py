"""Markdown tables of the latest results (for benchmarks/README.md).

    python benchmarks/report.py [results files ...]     # default: every known file in the results folder

Reads ``paper_protocol*.json``, ``human_cost*.json``, ``speed*.json`` and ``vote_prior*.json`` and prints each one's
tables with the device and command line that produced them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from _common import md_table, out_dir
from bench_human_cost import HEADERS as COST_HEADERS
from bench_human_cost import method_label, round_rows, summary_rows
from bench_paper_protocol import HEADERS as PROTOCOL_HEADERS
from bench_paper_protocol import summarize, table_rows
from bench_speed import speed_tables


def where(d: dict[str, Any]) -> str:
    """Device and command of a result file, one line."""
    dev = d.get("device_name") or d.get("device")
    commands = d.get("commands") or [d.get("command")]  # a result merged from several runs lists each
    return f"_{dev} ({d.get('cpu_count')} CPU cores), started {d.get('started')}: " + "; ".join(
        f"`{c}`" for c in commands) + "_"


def report(path: Path) -> str:
    d = json.loads(path.read_text())
    out = [f"### {path.name}", "", where(d), ""]
    if path.name.startswith("paper_protocol"):
        out.append(md_table(PROTOCOL_HEADERS, table_rows(summarize(d["runs"]))))
        if d.get("unfinished"):
            out += ["", f"{len(d['unfinished'])} runs were not started or finished within the time budget."]
    elif path.name.startswith("human_cost"):
        out.append(md_table(COST_HEADERS, summary_rows(d["results"])))
        for r in d["results"]:
            if r.get("status") == "done" and r["task"]["method"] == "labeltool_knn":
                out += ["", f"Rounds of {r['task']['dataset']} / {method_label(r['task'])} (batch {r['batch']}):", ""]
                out.append(md_table(["round", "reviewed", "accepted", "corrected", "by hand", "precision",
                                     "coverage"], round_rows(r)))
        if d.get("unfinished"):
            names = ", ".join(f"{u['task']['dataset']}/{method_label(u['task'])}" for u in d["unfinished"])
            out += ["", f"Not finished within the time budget: {names}."]
    elif path.name.startswith("speed"):
        for title, headers, rows in speed_tables(d):
            out += [f"**{title}**", "", md_table(headers, rows), ""]
    elif path.name.startswith("vote_prior"):
        keys = [k for k in d["rows"][0] if k != "pool"] if d.get("rows") else []
        out.append(md_table(keys, [[r[k] for k in keys] for r in d["rows"]]))
    return "\n".join(out)


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or sorted(
        p for p in out_dir().glob("*.json") if p.name.startswith(("paper_protocol", "human_cost", "speed", "vote_prior")))
    print("\n\n".join(report(p) for p in paths))


if __name__ == "__main__":
    main()
