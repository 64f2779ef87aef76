"""Decisions from a CSV file (``labeltool review --decisions FILE.csv``).

Columns: ``path`` (relative to the image folder), ``action`` (accept | reject | assign | unlabel;
default accept), ``label`` (the class accepted/assigned, or the class rejected) and optionally
``correct`` (for reject: the right class). The whole file is validated before anything is
written; then it is recorded as one batch, so it can be undone as one.

A file that could be read two ways is refused, naming the lines: a header naming a column
twice, a row with more values than the header has columns (an unquoted comma), two rows that
decide one image differently, and a ``reject`` whose ``correct`` class is the rejected one.
Rows repeating an earlier row exactly are recorded once and reported (a warning on the
``labeltool.io.review_file`` logger).
"""

from __future__ import annotations

import csv
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeltool.data.scan import RelpathIndex

_ACTIONS = {"accept", "reject", "assign", "unlabel"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Line:
    """One data row of the file: its first line number and its values by column name."""

    number: int
    values: dict[str, str]


def read_decisions(path: Path, image_ids: Mapping[str, int], classes: Sequence[str],
                   round_id: int | None) -> list[dict[str, Any]]:
    """Parse and validate ``path``; returns decision rows for :meth:`LabelingSession.record`.

    ``image_ids`` maps the relative path of each usable image to its id, ``classes`` are the
    class names by id and ``round_id`` the newest finished round (the rows are recorded in it).
    """
    if not path.is_file():
        raise FileNotFoundError(f"decisions file {path} does not exist")
    header, lines, problems = _read_lines(path)
    if "path" not in header:
        raise ValueError(f"{path}: needs a header with at least 'path' and 'label' columns")
    by_path = RelpathIndex(dict(image_ids))
    cid = {c: i for i, c in enumerate(classes)}
    rows: list[dict[str, Any]] = []
    first_of: dict[int, tuple[int, tuple[str, str, str]]] = {}  # image id -> (line, decision) seen first
    repeated: list[str] = []
    for line in lines:
        decided = _decision(line, by_path, cid, problems)
        if decided is None:
            continue
        image_id, key = decided
        seen = first_of.setdefault(image_id, (line.number, key))
        if seen[0] != line.number:
            if seen[1] == key:
                repeated.append(f"line {line.number} repeats line {seen[0]}")
            else:
                problems.append(f"line {line.number}: image {line.values.get('path', '').strip()!r} is already "
                                f"decided differently on line {seen[0]} ({_shown(seen[1])} vs {_shown(key)}); "
                                "keep one row per image")
            continue
        rows.extend(_rows_of(image_id, key, cid, round_id))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{path}: nothing recorded, {len(problems)} problem(s):\n  {shown}{more}")
    if repeated:
        log.warning("%s: %d exact repeat(s) recorded once: %s", path, len(repeated), "; ".join(repeated[:20]))
    return rows


def _read_lines(path: Path) -> tuple[list[str], list[_Line], list[str]]:
    """The header, the non-blank data rows with their line numbers, and the header's problems."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            parsed: list[tuple[int, list[str]]] = []
            start = 1
            for fields in reader:
                if fields:  # a blank line is no row
                    parsed.append((start, fields))
                start = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 CSV") from None
    except csv.Error as e:  # e.g. a field over the size limit
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    if not parsed:
        return [], [], []
    (header_line, header), data = parsed[0], parsed[1:]
    problems = _header_problems(header_line, header)
    lines = []
    for number, fields in data:
        if any(v.strip() for v in fields[len(header):]):
            problems.append(f"line {number}: {len(fields)} values but the header names {len(header)} columns "
                            "(quote a value that holds a comma)")
            continue
        lines.append(_Line(number, dict(zip(header, fields, strict=False))))
    return header, lines, problems


def _header_problems(line: int, header: list[str]) -> list[str]:
    where: dict[str, list[int]] = {}
    for column, name in enumerate(header, start=1):
        if name.strip():
            where.setdefault(name.strip().lower(), []).append(column)
    return [f"line {line}: column {name!r} appears {len(cols)} times (columns {', '.join(map(str, cols))}); "
            "keep one" for name, cols in where.items() if len(cols) > 1]


def _decision(line: _Line, by_path: RelpathIndex, cid: Mapping[str, int],
              problems: list[str]) -> tuple[int, tuple[str, str, str]] | None:
    """The image id and (action, label, correct) of a valid row; else None, its problem noted."""
    get, n = line.values.get, line.number
    rel = (get("path") or "").strip().replace("\\", "/")
    action = (get("action") or "accept").strip().lower()
    label = unicodedata.normalize("NFC", (get("label") or "").strip())
    correct = unicodedata.normalize("NFC", (get("correct") or "").strip())
    image_id = by_path.find(rel)
    if image_id is None:
        problems.append(f"line {n}: no usable image {rel!r} in the project")
    elif action not in _ACTIONS:
        problems.append(f"line {n}: action {action!r} is not one of {sorted(_ACTIONS)}")
    elif action == "unlabel":
        return image_id, ("unlabel", "", "")
    elif label not in cid:
        problems.append(f"line {n}: unknown class {label!r}; known: {sorted(cid)}")
    elif action == "reject" and correct and correct not in cid:
        problems.append(f"line {n}: unknown correct class {correct!r}")
    elif action == "reject" and correct == label:
        problems.append(f"line {n}: reject {label!r} with correct class {correct!r} says both no and yes; "
                        "give the right class in 'correct', or use accept")
    else:
        return image_id, (action, label, correct if action == "reject" else "")
    return None


def _rows_of(image_id: int, key: tuple[str, str, str], cid: Mapping[str, int],
             round_id: int | None) -> list[dict[str, Any]]:
    action, label, correct = key
    base = {"image_id": image_id, "round": round_id}
    if action == "unlabel":
        return [{**base, "action": "unlabel"}]
    rows = [{**base, "action": action, "class_id": cid[label]}]
    if correct:
        rows.append({**base, "action": "relabel", "class_id": cid[correct]})
    return rows


def _shown(key: tuple[str, str, str]) -> str:
    action, label, correct = key
    return action + (f" {label!r}" if label else "") + (f" (correct {correct!r})" if correct else "")
