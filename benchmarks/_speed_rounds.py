"""The round part of ``bench_speed.py``: one round on memory-mapped float16 features, timed part by
part in the order the session runs it (``LabelingSession.train_round`` then ``propose``: the
same calls ``rounds.step.step`` and ``rounds.proposal.propose_round`` make).

Parts: ``train`` (``train_head``), ``embed`` (``embed_pool``: the pool through the head, and the
class probabilities), ``metrics`` (``round_metrics``), ``kNN+propose`` (the suggestion source's
kNN over the unlabeled pool, selection and evidence), ``shares`` (class shares from the anchors
in the backbone's feature space) and ``anchor check`` (the heads trained on the anchors alone
behind the stated precision). ``round s`` is train + embed + kNN+propose, the round as this
benchmark timed it before the other parts were added; ``session s`` is every part.

A variant runs another copy of labeltool (``code``: a folder holding a ``labeltool`` package,
e.g. ``git archive <commit> labeltool | tar -x -C DIR``), or this one with a lever changed:
``steps`` (the training budget, ``min_steps = max_steps``), ``precision`` (of the pool pass
and the anchor check's embeddings) or ``loss`` (e.g. one that trains on unlabeled rows too). Variants alternate within one run, so they share the
machine's state; each runs in its own process, so its peak memory is its own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import AnonRssSampler, peak_rss_mb, proc_status_mb, set_threads

CLASSES = 10

ROUND_KEYS = ["images", "variant", "labeled", "train_s", "steps", "embed_s", "knn_propose_s", "round_s", "metrics_s",
              "shares_s", "anchor_check_s", "session_s", "peak_rss_mb", "peak_anon_mb", "same_batch"]
ROUND_HEADERS = ["images", "variant", "labeled", "train s", "steps", "embed s", "kNN+propose s", "round s",
                 "metrics s", "shares s", "anchor check s", "session s", "peak RSS MB", "peak anon MB",
                 "same batch as first"]


def parse_variant(text: str) -> dict[str, Any]:
    """``name[:key=value,...]`` → ``{"name": ..., "code": ..., "steps": ..., "precision": ..., "loss": ...}``."""
    name, _, rest = text.partition(":")
    out: dict[str, Any] = {"name": name}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        if key not in ("code", "steps", "precision", "loss"):
            raise SystemExit(f"variant {text!r}: unknown setting {key!r} (code, steps, precision, loss)")
        out[key] = int(value) if key == "steps" else value
    return out


def round_child(path: Path, n: int, labeled: int, threads: int | None, variant: dict[str, Any]) -> dict[str, Any]:
    """One round on the first ``n`` rows of the memmap under ``variant`` (in its own process)."""
    if variant.get("code"):
        sys.path.insert(0, str(Path(variant["code"]).resolve()))  # that copy's labeltool, not this tree's
    set_threads(threads)
    import torch

    import labeltool
    from labeltool.config import SuggestConfig, TrainConfig

    steps = variant.get("steps")
    cfg = TrainConfig(device="cpu", loss=variant.get("loss", "cross_entropy"),
                      **({"min_steps": steps, "max_steps": steps} if steps else {}))
    feats = np.load(path, mmap_mode="r")[:n]
    truth = np.load(path.with_name(path.stem + "_labels.npy"))[:n]
    labels = np.full(n, -1, dtype=np.int64)
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        labels[rng.choice(np.flatnonzero(truth == c), size=labeled // CLASSES, replace=False)] = c
    with AnonRssSampler() as anon:
        row, batch = _timed_round(feats, labels, cfg, SuggestConfig(), variant.get("precision"))
    row.update({"images": n, "variant": variant["name"], "labeled": int((labels >= 0).sum()),
                "peak_rss_mb": round(peak_rss_mb()), "peak_anon_mb": round(anon.peak_mb),
                "rss_end_mb": round(proc_status_mb("VmRSS") or 0), "features_file_mb": round(feats.nbytes / 2**20),
                "torch_threads": torch.get_num_threads(), "code": str(Path(labeltool.__file__).parent.parent),
                "batch_ids": batch, "batch_precision_true": round(float(np.mean(truth[batch] == row.pop("classes"))), 4)})
    return row


def _timed_round(feats: Any, labels: np.ndarray, cfg: Any, scfg: Any, precision: str | None) -> tuple[dict[str, Any], list[int]]:
    """Seconds of each part of one round (module docstring), and the batch's image ids."""
    from labeltool.eval.metrics import round_metrics
    from labeltool.eval.prevalence import estimate_shares, remaining_shares
    from labeltool.rounds.proposal import anchor_check
    from labeltool.rounds.step import RoundState, embed_pool
    from labeltool.suggest.propose import candidates, suggestions_from
    from labeltool.train.head import train_head

    ids = np.arange(labels.size, dtype=np.int64)
    lever = {} if precision is None else {"precision": precision}
    t = [time.perf_counter()]
    res = train_head(feats, labels, CLASSES, cfg)
    t.append(time.perf_counter())
    emb, probs = embed_pool(RoundState(res.head, res.loss), feats, device="cpu", **lever)
    t.append(time.perf_counter())
    round_metrics(emb, labels, res.loss, [str(c) for c in range(CLASSES)])
    t.append(time.perf_counter())
    shares = estimate_shares(feats, labels, labels >= 0, CLASSES, seed=0, knn_backend="faiss-cpu")
    t.append(time.perf_counter())
    cand = candidates(emb, labels, ids, scfg, probs=probs, num_classes=CLASSES, knn_backend="faiss-cpu")
    counts = np.bincount(labels[labels >= 0], minlength=CLASSES)
    rows = [] if cand is None else suggestions_from(
        cand, None if shares is None else remaining_shares(shares, counts, labels.size))
    t.append(time.perf_counter())
    batch = [r.image_id for r in rows]
    check = anchor_check(feats, labels, ids, labels >= 0, CLASSES, cfg, scfg.calibration_folds,
                         extra=np.asarray(batch, dtype=np.int64), seed=cfg.seed, knn_backend="faiss-cpu", **lever)
    t.append(time.perf_counter())
    d = np.diff(t)
    return {"train_s": round(d[0], 2), "steps": res.steps, "embed_s": round(d[1], 2), "metrics_s": round(d[2], 2),
            "shares_s": round(d[3], 2), "knn_propose_s": round(d[4], 2), "anchor_check_s": round(d[5], 2),
            "round_s": round(d[0] + d[1] + d[4], 2), "session_s": round(float(d.sum()), 2),
            "suggestions": len(rows),
            "held_out_accuracy": None if check is None else round(check.accuracy, 4),
            "classes": np.array([r.class_id for r in rows])}, batch


def with_overlap(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``same_batch``: how many of its batch's images the first variant's batch of the
    same size also holds (the first variant's own rows compare with its first run)."""
    first: dict[int, set[int]] = {}
    for r in rows:
        if "error" in r:
            continue
        ids = set(r.get("batch_ids", []))
        first.setdefault(r["images"], ids)
        r["same_batch"] = len(ids & first[r["images"]])
    return rows


def round_table(result: dict[str, Any], title: str) -> tuple[str, list[str], list[list[Any]]]:
    """The round table of a speed result (rows of either this part's or the earlier format)."""
    rows = result["round"]
    keys, headers = ROUND_KEYS, ROUND_HEADERS
    if not any("session_s" in r for r in rows):  # written before the parts were split
        keys = ["images", "labeled", "train_s", "steps", "embed_s", "knn_propose_s", "round_s", "peak_rss_mb",
                "peak_anon_mb", "features_file_mb"]
        headers = ["images", "labeled", "train s", "steps", "embed s", "kNN+propose s", "round s", "peak RSS MB",
                   "peak anon MB", "features MB"]
    return (title, headers, [[r.get(k) for k in keys] if "error" not in r else [r["error"][-80:]] + [None] * (len(keys) - 1)
                             for r in rows])
