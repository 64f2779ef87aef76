"""The round part of ``bench_speed.py``: one round on memory-mapped float16 features, timed part by
part in the order the session runs it (``LabelingSession.train_round`` then ``propose``: the
same calls ``rounds.step.step`` and ``rounds.proposal.propose_round`` make).

Parts: ``train`` (``train_head``), ``embed`` (``embed_pool``: the pool through the head, and the
class probabilities), ``metrics`` (``round_metrics``), ``kNN+propose`` (the suggestion source's
kNN over the unlabeled pool, selection and evidence), ``shares`` (class shares from the anchors
in the backbone's feature space) and ``anchor check`` (the heads trained on the anchors alone
behind the stated precision). ``round s`` is train + embed + kNN+propose, the round as this
benchmark timed it before the other parts were added; ``session s`` is every part. Each part is
timed in wall and CPU seconds (the process's own, every thread): on a CPU shared with other
work the CPU seconds are the steadier measure. With ``--threads`` every library's thread pool
is set to it (:func:`thread_env`).

A variant runs another copy of labeltool (``code``: a folder holding a ``labeltool`` package,
e.g. ``git archive <commit> labeltool | tar -x -C DIR``), or this one with a lever changed:
``steps`` (the training budget, ``min_steps = max_steps = continued_steps``), ``precision`` (of the pool pass
and the anchor check's embeddings), ``train_precision`` (``TrainConfig.precision``: the
products while the round's head and the check's heads train), ``loss`` (e.g. one that trains on unlabeled rows too) or
``warm=1``: the timed round is a second round in a warm process, as in the app after its first
(an untimed round on all labels but ``WARM_NEW`` runs first, every part of it; the timed round
continues its head and Adam moments with those labels added; unless ``fresh_check=1``, its
anchor check is offered the first round's fold heads (reused when the anchors are unchanged:
with ``unreviewed=1`` the added labels are not anchors, as after a batch accepted without a
rejection) and its shares the first round's anchor neighbours (extended with the new anchors)). Variants alternate within one run, so they share the
machine's state; each runs in its own process, so its peak memory is its own.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import AnonRssSampler, peak_rss_mb, proc_status_mb, set_threads

CLASSES = 10
WARM_NEW = 100  # labels a warm variant's timed round adds to its untimed first round (one reviewed batch)

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
        flags = ("steps", "warm", "fresh_check", "unreviewed")
        if key not in ("code", "precision", "train_precision", "loss", *flags):
            raise SystemExit(f"variant {text!r}: unknown setting {key!r} "
                             f"(code, precision, train_precision, loss, {', '.join(flags)})")
        out[key] = int(value) if key in flags else value
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
    budget = {"min_steps": steps, "max_steps": steps} if steps else {}
    if steps and "continued_steps" in TrainConfig.__dataclass_fields__:  # an older copy has no such field
        budget["continued_steps"] = steps
    if variant.get("train_precision"):
        budget["precision"] = variant["train_precision"]
    cfg = TrainConfig(device="cpu", loss=variant.get("loss", "cross_entropy"), **budget)
    feats = np.load(path, mmap_mode="r")[:n]
    truth = np.load(path.with_name(path.stem + "_labels.npy"))[:n]
    labels = np.full(n, -1, dtype=np.int64)
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        labels[rng.choice(np.flatnonzero(truth == c), size=labeled // CLASSES, replace=False)] = c
    with AnonRssSampler() as anon:
        earlier, anchors = None, labels >= 0
        if variant.get("warm"):
            first = labels.copy()
            first[rng.choice(np.flatnonzero(labels >= 0), WARM_NEW, replace=False)] = -1
            _, _, earlier = _timed_round(feats, first, cfg, SuggestConfig(), variant.get("precision"), anchors=first >= 0)
            if variant.get("unreviewed"):
                anchors = first >= 0  # the added labels were accepted without a rejection: not anchors
        row, batch, _ = _timed_round(feats, labels, cfg, SuggestConfig(), variant.get("precision"), earlier,
                                     fresh_check=bool(variant.get("fresh_check")), anchors=anchors)
    row.update({"images": n, "variant": variant["name"], "labeled": int((labels >= 0).sum()),
                "peak_rss_mb": round(peak_rss_mb()), "peak_anon_mb": round(anon.peak_mb),
                "rss_end_mb": round(proc_status_mb("VmRSS") or 0), "features_file_mb": round(feats.nbytes / 2**20),
                "torch_threads": torch.get_num_threads(), "code": str(Path(labeltool.__file__).parent.parent),
                "batch_ids": batch, "batch_precision_true": round(float(np.mean(truth[batch] == row.pop("classes"))), 4)})
    return row


def _timed_round(feats: Any, labels: np.ndarray, cfg: Any, scfg: Any, precision: str | None,
                 earlier: Any = None, fresh_check: bool = False,
                 anchors: np.ndarray | None = None) -> tuple[dict[str, Any], list[int], Any]:
    """Seconds of each part of one round (module docstring), the batch's image ids and
    ``(TrainResult, AnchorCheck, AnchorNeighbours)`` of the round (``earlier``: those this round
    continues; its check's fold heads and its shares' neighbours are offered to this round, where
    this copy of labeltool takes them, unless ``fresh_check``). ``anchors [N]``: the verified
    labels (default: every label)."""
    import inspect

    from labeltool.eval.metrics import round_metrics
    from labeltool.eval.prevalence import estimate_shares, remaining_shares
    try:
        from labeltool.rounds.anchor_check import anchor_check
    except ImportError:  # a copy from before the check had a module of its own
        from labeltool.rounds.proposal import anchor_check
    from labeltool.rounds.step import RoundState, embed_pool
    from labeltool.suggest.propose import candidates, suggestions_from
    from labeltool.train.head import train_head

    ids = np.arange(labels.size, dtype=np.int64)
    lever = {} if precision is None else {"precision": precision}
    clock = _Clock()
    before, before_check, before_near = earlier if earlier is not None else (None, None, None)
    go_on = {} if before is None else {"init": (before.head, before.loss), "optimizer_state": before.optimizer_state}
    res = train_head(feats, labels, CLASSES, cfg, **go_on)
    clock.lap("train")
    emb, probs = embed_pool(RoundState(res.head, res.loss), feats, device="cpu", **lever)
    clock.lap("embed")
    round_metrics(emb, labels, res.loss, [str(c) for c in range(CLASSES)])
    clock.lap("metrics")
    try:  # propose_round reads the features through released_reads (where it exists) before the shares
        from labeltool.models.heads import released_reads

        read = released_reads(feats)
    except ImportError:
        read = feats
    anchors = labels >= 0 if anchors is None else anchors
    try:  # a copy that carries the shares' neighbours over from the last proposal, as the app does
        from labeltool.eval.prevalence import anchor_neighbours, shares_from
    except ImportError:
        near, shares = None, estimate_shares(read, labels, anchors, CLASSES, seed=0, knn_backend="faiss-cpu")
    else:
        near = anchor_neighbours(read, labels, anchors, ids, seed=0, knn_backend="faiss-cpu",
                                 previous=None if fresh_check else before_near)
        shares = None if near is None else shares_from(near, labels, anchors, CLASSES)
    clock.lap("shares")
    cand = candidates(emb, labels, ids, scfg, probs=probs, num_classes=CLASSES, knn_backend="faiss-cpu")
    counts = np.bincount(labels[labels >= 0], minlength=CLASSES)
    rows = [] if cand is None else suggestions_from(
        cand, None if shares is None else remaining_shares(shares, counts, labels.size))
    clock.lap("knn_propose")
    batch = [r.image_id for r in rows]
    if "previous" in inspect.signature(anchor_check).parameters and before_check is not None and not fresh_check:
        lever = {**lever, "previous": before_check.heads}
    check = anchor_check(feats, labels, ids, anchors, CLASSES, cfg, scfg.calibration_folds,
                         extra=np.asarray(batch, dtype=np.int64), seed=cfg.seed, knn_backend="faiss-cpu", **lever)
    clock.lap("anchor_check")
    return {**clock.seconds(), "steps": res.steps, "suggestions": len(rows),
            "held_out_accuracy": None if check is None else round(check.accuracy, 4),
            "classes": np.array([r.class_id for r in rows])}, batch, (res, check, near)


class _Clock:
    """Wall and CPU seconds (``time.process_time``: every thread of this process) of each lap."""

    def __init__(self) -> None:
        self.laps: dict[str, tuple[float, float]] = {}
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.laps[name] = (now[0] - self._last[0], now[1] - self._last[1])
        self._last = now

    def seconds(self) -> dict[str, float]:
        """``PART_s`` and ``PART_cpu_s`` of each lap, plus ``round`` (train + embed + kNN+propose)
        and ``session`` (every lap)."""
        out: dict[str, float] = {}
        for name, (wall, cpu) in self.laps.items():
            out[f"{name}_s"], out[f"{name}_cpu_s"] = round(wall, 2), round(cpu, 2)
        for total, parts in (("round", ("train", "embed", "knn_propose")), ("session", tuple(self.laps))):
            out[f"{total}_s"] = round(sum(self.laps[p][0] for p in parts), 2)
            out[f"{total}_cpu_s"] = round(sum(self.laps[p][1] for p in parts), 2)
        return out


def thread_env(threads: int | None) -> dict[str, str] | None:
    """The environment of a round's process with ``threads`` for every library's thread pool
    (OpenMP for faiss and torch, OpenBLAS/MKL for numpy); ``None``: the libraries' defaults."""
    if not threads:
        return None
    return {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}


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


def _cell(r: dict[str, Any], key: str) -> Any:
    """A row's value; ``wall (CPU)`` for a part timed both ways."""
    cpu = key[:-2] + "_cpu_s" if key.endswith("_s") else None
    return f"{r[key]:.2f} ({r[cpu]:.2f})" if cpu in r and key in r else r.get(key)


def round_table(result: dict[str, Any], title: str) -> tuple[str, list[str], list[list[Any]]]:
    """The round table of a speed result (rows of either this part's or the earlier format)."""
    rows = result["round"]
    keys, headers = ROUND_KEYS, ROUND_HEADERS
    if not any("session_s" in r for r in rows):  # written before the parts were split
        keys = ["images", "labeled", "train_s", "steps", "embed_s", "knn_propose_s", "round_s", "peak_rss_mb",
                "peak_anon_mb", "features_file_mb"]
        headers = ["images", "labeled", "train s", "steps", "embed s", "kNN+propose s", "round s", "peak RSS MB",
                   "peak anon MB", "features MB"]
    return (title, headers, [[_cell(r, k) for k in keys] if "error" not in r else [r["error"][-80:]] + [None] * (len(keys) - 1)
                             for r in rows])


SUMMARY_PARTS = ["train_s", "embed_s", "knn_propose_s", "round_s", "shares_s", "anchor_check_s", "session_s"]


def round_summary(result: dict[str, Any], title: str) -> tuple[str, list[str], list[list[Any]]] | None:
    """Per size and variant, the minimum over the repeats of each part's wall and CPU seconds, and
    the first variant's minimum round and session seconds over this variant's, wall and CPU
    (``None`` with one run per variant, or rows without CPU seconds)."""
    rows = [r for r in result["round"] if "session_cpu_s" in r]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["images"], r["variant"]), []).append(r)
    if not groups or max(len(g) for g in groups.values()) < 2:
        return None
    first = {n: v for (n, v) in reversed(list(groups))}  # the first variant run at each size

    def best(g: list[dict[str, Any]], key: str) -> float:
        return min(r[key] for r in g)

    out = []
    for (n, v), g in groups.items():
        ref = groups[(n, first[n])]
        cells = [f"{best(g, k):.2f} ({best(g, k[:-2] + '_cpu_s'):.2f})" for k in SUMMARY_PARTS]
        ratios = [f"{best(ref, k) / best(g, k):.2f}× ({best(ref, k[:-2] + '_cpu_s') / best(g, k[:-2] + '_cpu_s'):.2f}×)"
                  for k in ("round_s", "session_s")]
        out.append([n, v, len(g), *cells, max(r["peak_rss_mb"] for r in g), *ratios])
    headers = ["images", "variant", "runs", "train s", "embed s", "kNN+propose s", "round s", "shares s",
               "anchor check s", "session s", "peak RSS MB (max)", "round: first / this", "session: first / this"]
    return title, headers, out
