"""Decisions from a CSV file (``labeltool review --decisions FILE.csv``).

Columns: ``path`` (relative to the image folder), ``action`` (accept | reject | assign | unlabel;
default accept), ``label`` (the class accepted/assigned, or the class rejected) and optionally
``correct`` (for reject: the right class). The whole file is validated before anything is
written; then it is recorded as one batch, so it can be undone as one.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labeltool.data.scan import RelpathIndex

_ACTIONS = {"accept", "reject", "assign", "unlabel"}


def read_decisions(path: Path, image_ids: Mapping[str, int], classes: Sequence[str],
                   round_id: int | None) -> list[dict[str, Any]]:
    """Parse and validate ``path``; returns decision rows for :meth:`LabelingSession.record`.

    ``image_ids`` maps the relative path of each usable image to its id, ``classes`` are the
    class names by id and ``round_id`` the newest finished round (the rows are recorded in it).
    """
    if not path.is_file():
        raise FileNotFoundError(f"decisions file {path} does not exist")
    by_path = RelpathIndex(dict(image_ids))
    cid = {c: i for i, c in enumerate(classes)}
    rnd = round_id
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            records = list(reader)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 CSV") from None
    except csv.Error as e:  # e.g. a field over the size limit
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    if "path" not in header:
        raise ValueError(f"{path}: needs a header with at least 'path' and 'label' columns")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for line, rec in enumerate(records, start=2):
        rel = (rec.get("path") or "").strip().replace("\\", "/")
        action = (rec.get("action") or "accept").strip().lower()
        label = unicodedata.normalize("NFC", (rec.get("label") or "").strip())
        correct = unicodedata.normalize("NFC", (rec.get("correct") or "").strip())
        image_id = by_path.find(rel)
        if image_id is None:
            problems.append(f"line {line}: no usable image {rel!r} in the project")
            continue
        if action not in _ACTIONS:
            problems.append(f"line {line}: action {action!r} is not one of {sorted(_ACTIONS)}")
            continue
        base = {"image_id": image_id, "round": rnd}
        if action == "unlabel":
            rows.append({**base, "action": "unlabel"})
            continue
        if label not in cid:
            problems.append(f"line {line}: unknown class {label!r}; known: {sorted(cid)}")
            continue
        if action == "reject":
            rows.append({**base, "action": "reject", "class_id": cid[label]})
            if correct:
                if correct not in cid:
                    problems.append(f"line {line}: unknown correct class {correct!r}")
                    continue
                rows.append({**base, "action": "relabel", "class_id": cid[correct]})
        else:
            rows.append({**base, "action": action, "class_id": cid[label]})
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{path}: nothing recorded, {len(problems)} problem(s):\n  {shown}{more}")
    return rows
