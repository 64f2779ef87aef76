"""Markdown tables of the latest results (for benchmarks/README.md).

    python benchmarks/report.py [results files ...]     # default: every known file in the results folder
    python benchmarks/report.py --compare BEFORE.json AFTER.json   # protocol runs paired by task and seed
    python benchmarks/report.py --readme [--check]      # refresh (or check) the marked blocks of README.md

Reads ``paper_protocol*.json``, ``human_cost*.json``, ``speed*.json``, ``vote_prior*.json`` and ``sources*.json``
and prints each one's tables with the device and command line that produced them.

In ``--readme`` mode only the text between ``<!-- report FILE -->`` (or
``<!-- report --compare BEFORE AFTER -->``, or ``<!-- report --calibration FILE ... -->``: the
summary rows of several ``bench_calibration.py`` results side by side) and ``<!-- /report -->`` is rewritten, from the files
in the results folder; the prose around the blocks is left byte for byte.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import md_table, out_dir
from _protocol import primary
from bench_budget import budget_tables
from bench_human_cost import HEADERS as COST_HEADERS
from bench_human_cost import method_label, round_rows, summary_rows
from bench_knn import knn_tables
from bench_paper_protocol import HEADERS as PROTOCOL_HEADERS
from bench_paper_protocol import run_gain, summarize, table_rows
from bench_projection import projection_tables
from bench_sources import pivot as sources_pivot
from bench_speed import speed_tables


def where(d: dict[str, Any]) -> str:
    """Device and command of a result file, one line."""
    dev = d.get("device_name") or d.get("device")
    commands = d.get("commands") or [d.get("command")]  # a result merged from several runs lists each
    when = f"started {d['started']}" if "started" in d else f"finished {d.get('finished')}"
    load = f", load {d['load_average'][0]}" if d.get("load_average") else ""
    return f"_{dev} ({d.get('cpu_count')} CPU cores{load}), {when}: " + "; ".join(
        f"`{c}`" for c in commands) + "_"


TRACE_AT = (0, 5, 10, 15, 20, 25)
TRACE_HEADERS = ["init / loss / variant", *(f"it {i}" for i in TRACE_AT), "batch precision it 5 → 25",
                 "pseudo prec it 25", "labeled it 25"]


def trace_rows(runs: list[dict[str, Any]], seed: int = 0) -> list[list[Any]]:
    """Test accuracy (%) along the meta-iterations of every finished head-mode run of ``seed``."""
    rows = []
    for r in runs:
        t = r["task"]
        its = r["iterations"]
        if r.get("status") != "done" or t["seed"] != seed or t.get("mode", "head") != "head" or len(its) <= TRACE_AT[-1]:
            continue
        clf = bool(r.get("has_classifier"))
        acc = [f"{100 * primary(its[i], clf):.1f}" for i in TRACE_AT]
        first, last = its[TRACE_AT[1]], its[TRACE_AT[-1]]  # iteration 0 has no pseudo-labels yet
        prec = f"{first['batch_precision']:.2f} → {last['batch_precision']:.2f}"
        rows.append([f"{t['init']} / {t['loss']} / {t.get('variant', 'paper')}", *acc, prec,
                     f"{100 * last['pseudo_precision']:.1f}", f"{last['labeled']:,}"])
    return sorted(rows)


def report(path: Path, heading: bool = True) -> str:
    """Markdown for one result file: its tables, under a ``### name`` heading unless ``heading`` is off."""
    d = json.loads(path.read_text())
    out = [f"### {path.name}", "", where(d), ""] if heading else [where(d), ""]
    if path.name.startswith("paper_protocol"):
        out.append(md_table(PROTOCOL_HEADERS, table_rows(summarize(d["runs"]))))
        trace = trace_rows(d["runs"])
        if trace:
            out += ["", "Test accuracy along the meta-iterations, seed 0 (eval column as above):", "",
                    md_table(TRACE_HEADERS, trace)]
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
    elif path.name.startswith("projection"):
        for title, headers, rows in projection_tables(d):
            out += [f"**{title}**", "", md_table(headers, rows), ""]
    elif path.name.startswith("knn"):
        for title, headers, rows in knn_tables(d):
            out += [f"**{title}**", "", md_table(headers, rows), ""]
    elif path.name.startswith("budget"):
        for title, headers, rows in budget_tables(d):
            out += [f"**{title}**", "", md_table(headers, rows), ""]
    elif path.name.startswith("sources"):
        out += ["Precision of the top 5% / 20% of the pool by confidence (bold: the best at 20%):", ""]
        out.append(md_table(*sources_pivot(d["summary"])))
    elif path.name.startswith("calibration"):
        out.append(md_table(CALIBRATION_HEADERS, calibration_rows(d["runs"])))
        for r in d["runs"]:
            out += ["", f"Rounds of {r['dataset']} / {r['reviewer']}:", ""]
            out.append(md_table(CALIBRATION_ROUND_HEADERS, calibration_round_rows(r)))
    elif path.name.startswith("scratch"):
        out += [scratch_papers(d), "", md_table(SCRATCH_HEADERS, scratch_rows(d["rows"]))]
    elif path.name.startswith("auto"):
        out.append(md_table(AUTO_HEADERS, [[r["dataset"], r["labels"], r["pool"], r["chosen"],
                                            ", ".join(f"{k} {100 * v:.0f}%" + (
                                                f" (on the first {r['scored_on'][k]}, then stopped)"
                                                if k in r.get("scored_on", {}) else "") for k, v in r["scores"].items()),
                                            r["n_held"], r["decide_seconds"]] for r in d["rows"]]))
    elif path.name.startswith("embed_runtimes"):
        out.append(md_table(EMBED_HEADERS, embed_rows(d["rows"])))
    elif path.name.startswith("vote_prior"):
        keys = [k for k in d["rows"][0] if k != "pool"] if d.get("rows") else []
        out.append(md_table(keys, [[r[k] for k in keys] for r in d["rows"]]))
    return "\n".join(out)


EMBED_HEADERS = ["backbone", "px", "runtime", "decode img/s (1 process)", "model img/s", "model × torch",
                 "end to end img/s", "end to end × torch", "cosine to torch min / mean", "export s"]


def embed_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per backbone and runtime of a ``bench_embed.py`` result."""
    def x(v: Any) -> str:
        return "–" if v is None else f"{v:.2f}×"
    return [[r["backbone"], r["input_px"], r["runtime"], r["decode_img_s_1proc"], r["model_img_s"],
             x(r.get("model_x_torch")), "–" if r["end_to_end_img_s"] is None else r["end_to_end_img_s"],
             x(r.get("end_to_end_x_torch")), f"{r['cosine_min']:.4f} / {r['cosine_mean']:.4f}",
             "–" if r["export_s"] is None else r["export_s"]] for r in rows]


SCRATCH_HEADERS = ["network", "loss", "consistency", "augment", "labels", "steps", "test 1-NN %", "test classifier %",
                   "train s", "train img/s", "extract img/s"]
AUTO_HEADERS = ["dataset", "labels", "pool", "auto chose", "held-out accuracy", "held out", "seconds to decide"]


def scratch_papers(d: dict[str, Any]) -> str:
    """The papers' figures for the same protocol, as one line."""
    papers = d.get("papers") or {}
    if not papers:
        return f"{d['dataset']}, {d['labels']} labels (no published figure for this protocol)."
    return f"{d['dataset']}, {d['labels']} labels; published: " + "; ".join(f"{k} {v}%" for k, v in papers.items()) + "."


def scratch_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per run of ``bench_scratch.py``."""
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    out = []
    for r in rows:
        ft = r.get("finetune") or {}
        whole = lambda v: "-" if v is None else int(round(v))  # noqa: E731
        out.append([r["net"], r["loss"], ft.get("consistency", "-"), ft.get("augment", "-"), r["labels"],
                    r.get("steps", "-"), pct(r["acc_1nn"]), pct(r.get("acc_clf")), whole(r.get("train_seconds")),
                    whole(r.get("train_images_per_second")), whole(r.get("extract_images_per_second"))])
    return out


CALIBRATION_HEADERS = ["dataset", "reviewer", "rounds", "MAE", "max error", "in 90% interval", "ECE",
                       "remainder MAE", "before: MAE", "before: max", "labels right at the end"]
CALIBRATION_ROUND_HEADERS = ["round", "batch", "true", "stated", "90% interval", "before", "remainder true",
                             "remainder stated", "reviews to 99%", "labels right"]


def calibration_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per dataset and reviewer of a ``bench_calibration.py`` result."""
    return [[r["dataset"], r["reviewer"], len(r["rounds"]), round(r["mae"], 3), round(r["max_error"], 3),
             round(r["interval_coverage"], 2), round(r["ece"], 3),
             None if r["remainder_mae"] is None else round(r["remainder_mae"], 3), round(r["previous_mae"], 3),
             round(r["previous_max"], 3), round(r["final_label_accuracy"], 3)] for r in runs]


def calibration_round_rows(run: dict[str, Any]) -> list[list[Any]]:
    """Every round of one calibration run: stated vs true precision, and the remainder."""
    f = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return [[w["round"], w["batch"], f(w["true"]), f(w["stated"]), f"[{w['low']:.2f}, {w['high']:.2f}]", f(w["previous"]),
             f(w["remainder_true"]), f(w["remainder_stated"]), w["reviews_needed"], f(w["label_accuracy"])]
            for w in run["rounds"]]


COMPARE_HEADERS = ["dataset", "mode", "init", "loss", "variant", "seeds", "eval", "self-trained before",
                   "self-trained after", "change", "gain before", "gain after"]


def compare_protocol(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[list[Any]]:
    """Table rows pairing the finished runs of two protocol results by task and seed: self-trained
    accuracy (%) before and after, their per-seed difference, and each side's paired gain (mean ± std)."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        t = r["task"]
        return t["dataset"], t.get("mode", "head"), t["init"], t["loss"], t["variant"], t["seed"]

    old = {key(r): r for r in before if r.get("status") == "done"}
    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in after:
        if r.get("status") == "done" and key(r) in old:
            groups.setdefault(key(r)[:-1], []).append((old[key(r)], r))

    def stat(vals: list[float | None]) -> str:
        v = np.array([x for x in vals if x is not None], dtype=float) * 100
        if v.size == 0:
            return "-"
        return f"{v.mean():+.2f}" if v.size == 1 else f"{v.mean():+.2f} ± {v.std(ddof=1):.2f}"

    rows = []
    for (dataset, mode, init, loss, variant), pairs in sorted(groups.items()):
        clf = pairs[0][1]["has_classifier"]
        last = [(primary(a["iterations"][-1], clf), primary(b["iterations"][-1], clf)) for a, b in pairs]
        gains = [[run_gain(r, clf) for r in side] for side in zip(*pairs, strict=True)]  # before, after
        rows.append([dataset, mode, init, loss, variant, len(pairs), "softmax" if clf else "1-NN",
                     stat([a for a, _ in last]).lstrip("+"), stat([b for _, b in last]).lstrip("+"),
                     stat([None if a is None or b is None else b - a for a, b in last]),
                     stat(gains[0]), stat(gains[1])])
    return rows


OPEN = re.compile(r"^<!-- report (.*?) -->\n", re.M)  # markers are whole lines; a mention in prose is not one
CLOSE = "<!-- /report -->"
CLOSE_LINE = re.compile(r"^<!-- /report -->$", re.M)


class ReadmeError(ValueError):
    """A marked README block that cannot be filled: unclosed, nested, or naming no result file."""


def compare_table(before: Path, after: Path) -> str:
    """Markdown table pairing the runs of two protocol result files (see :func:`compare_protocol`)."""
    return md_table(COMPARE_HEADERS, compare_protocol(*(json.loads(p.read_text())["runs"] for p in (before, after))))


def calibration_side_by_side(paths: list[Path]) -> str:
    """One table of the summary rows of several calibration results, each row led by how its
    anchor check ran (the fold heads' width, afresh or continued, the training precision), after
    each file's run line."""
    rows = []
    for path in paths:
        d = json.loads(path.read_text())
        a = d["args"]
        lever = (f"fold heads {a.get('fold_hidden', 512)} wide, {a.get('fold_steps', 100)} steps, "
                 f"{d.get('fold_heads', 'afresh each round')}")
        if "train_precision" in a:  # runs from before the setting trained in float32
            lever += f", training {a['train_precision']}, seed {a.get('seed', 0)}"
        rows += [[lever, *r] for r in calibration_rows(d["runs"])]
    runs = [f"- {where(json.loads(p.read_text()))}" for p in paths]
    return "\n".join([*runs, "", md_table(["anchor check", *CALIBRATION_HEADERS], rows)])


def block_text(args: list[str], results: Path) -> str:
    """Generated text of one marked block, ``args`` being ``[FILE]``, ``["--compare", BEFORE, AFTER]``
    or ``["--calibration", FILE, ...]``."""
    if args[:1] == ["--calibration"]:
        files = [results / n for n in args[1:]]
        if not files or not all(p.is_file() for p in files):
            raise ReadmeError(f"marker '<!-- report {' '.join(args)} -->' names a missing file or none")
        return calibration_side_by_side(files)
    compare = args[:1] == ["--compare"]
    paths = [results / n for n in (args[1:] if compare else args)]
    if len(paths) != (2 if compare else 1):
        raise ReadmeError(f"marker '<!-- report {' '.join(args)} -->' needs one file or --compare with two")
    for path in paths:
        if not path.is_file():
            raise ReadmeError(f"marker '<!-- report {' '.join(args)} -->' names {path}, which does not exist")
    return compare_table(*paths) if compare else report(paths[0], heading=False)


def fill_readme(text: str, results: Path) -> tuple[str, list[str]]:
    """``text`` with every marked block regenerated from ``results``, and the markers whose block changed.

    Raises ``ReadmeError`` (with the line number) on an unclosed or nested marker or a missing file."""
    def stray(a: int, b: int) -> None:  # a closing marker outside every block
        if (c := CLOSE_LINE.search(text, a, b)) is not None:
            line = text.count("\n", 0, c.start()) + 1
            raise ReadmeError(f"line {line}: '{CLOSE}' without an opening '<!-- report FILE -->'")

    out, changed, pos = [], [], 0  # pos: just after the last block's closing marker
    while (m := OPEN.search(text, pos)) is not None:
        stray(pos, m.start())
        line = text.count("\n", 0, m.start()) + 1
        c = CLOSE_LINE.search(text, m.end())
        nxt = OPEN.search(text, m.end())
        if c is None or (nxt is not None and nxt.start() < c.start()):
            raise ReadmeError(f"line {line}: '<!-- report {m.group(1)} -->' has no '{CLOSE}' before the next block")
        try:
            new = block_text(m.group(1).split(), results).rstrip("\n") + "\n\n"  # a blank line ends the table
        except ReadmeError as e:
            raise ReadmeError(f"line {line}: {e}") from None
        if text[m.end():c.start()] != new:
            changed.append(m.group(1))
        out += [text[pos:m.end()], new, CLOSE]
        pos = c.end()
    stray(pos, len(text))
    return "".join(out) + text[pos:], changed


def main() -> None:
    ap = argparse.ArgumentParser(description="Markdown tables of benchmark result files.")
    ap.add_argument("files", nargs="*", type=Path,
                    help="result files (default: every known file in the results folder)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="two protocol results, paired by task and seed")
    ap.add_argument("--readme", nargs="?", type=Path, const=Path(__file__).with_name("README.md"),
                    help="rewrite the marked blocks of this README (default benchmarks/README.md) from the results")
    ap.add_argument("--check", action="store_true",
                    help="with --readme: write nothing, exit 1 if a marked block is out of date")
    args = ap.parse_args()
    if args.check and not args.readme:
        ap.error("--check goes with --readme")
    if args.readme:
        if args.files or args.compare:
            ap.error("--readme takes no result files: the blocks name them")
        if not args.readme.is_file():
            ap.error(f"no README {args.readme}")
        try:
            text, changed = fill_readme(args.readme.read_text(), out_dir())
        except ReadmeError as e:
            ap.error(f"{args.readme}: {e}")
        if args.check:
            for c in changed:
                print(f"out of date: <!-- report {c} -->")
            sys.exit(1 if changed else 0)
        if changed:  # written whole, then renamed: an interrupted refresh leaves the old README
            tmp = args.readme.with_name(f".{args.readme.name}.tmp")
            tmp.write_text(text)
            tmp.replace(args.readme)
        print(f"{args.readme}: {len(changed)} block(s) rewritten" + "".join(f"\n  {c}" for c in changed))
        return
    for path in [*args.files, *(args.compare or [])]:
        if not path.is_file():
            ap.error(f"no result file {path}; the files are in {out_dir()}")
    if args.compare:
        if args.files:
            ap.error("--compare takes exactly two files and no others")
        print(compare_table(*args.compare))
        return
    paths = args.files or sorted(
        p for p in out_dir().glob("*.json") if p.name.startswith(("paper_protocol", "human_cost", "speed", "vote_prior", "sources", "projection", "budget")))
    print("\n\n".join(report(p) for p in paths))

if __name__ == "__main__":
    main()
