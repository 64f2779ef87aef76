"""The anchor check behind a batch's stated precision: heads trained on the verified labels alone.

The precision the tool states must not rest on the reviewer: one who accepts everything gives
no rejections to learn from, and labels accepted unreviewed confirm the model that proposed
them (a held-out seed image is "predicted right" by the very labels it spread). So the check
is made by models that never see an unverified label: heads trained only on the *anchors*, the
labels a person verified (the seed, hand labels, and the labels of rounds in which the reviewer
corrected something, proof that the round was looked at). The anchors are split into folds;
each fold's head, trained on the other anchors, scores its held-out anchors and the unlabeled
images with a distance-weighted kNN vote among its anchors. (Letting these heads train on the
unverified labels too, even leaving out those nearest the held-out anchors, made the estimate
optimistic by up to 0.19 on the bundled sample: the held-out anchors sit where those labels are
right, the wrong ones pile up far from any anchor.) A temperature fitted on the held-out anchors
turns the votes into calibrated class probabilities ``q``; a suggestion of class ``s`` is right
with probability ``q[s]`` (averaged over the folds). The estimate is as honest as the anchors are
representative; it is conservative where the round's own model knows more than the anchors do.
While the anchors stay the same, a check reuses the previous check's fold heads
(:class:`FoldHeads`) and pays only their embedding passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from labeltool.config import TrainConfig
from labeltool.eval.calibration import fit_temperature, fit_temperatures, tempered
from labeltool.eval.metrics import unit_rows
from labeltool.models.heads import released_reads
from labeltool.suggest.knn import knn_search
from labeltool.suggest.knn_scores import knn_class_scores, vote_temperature
from labeltool.suggest.propose import Suggestion
from labeltool.train.head import TrainResult, embed_features, train_head

__all__ = ["FOLD_HIDDEN", "FOLD_STEPS", "MIN_ANCHORS", "AnchorCheck", "FoldHeads", "anchor_check"]

MIN_ANCHORS = 20  # fewer held-out verified labels than this: the stated precision is uncalibrated
# Unlabeled rows scored by each fold (plus the batch): the coverage meter's sampling error is at
# most 0.5 / sqrt(5,000) ≈ 0.007 (one standard error), below its calibration spread.
_POOL_SAMPLE = 5_000
_RESAMPLES = 100  # bootstrap resamples of the held-out anchors for the intervals
# Steps of each fold's head: on CIFAR-10 (64 px, careful reviewer, 3 rounds) the stated precision
# was the same within 0.013 with 100, 300 and 900 steps, so the check costs 5 short trainings.
FOLD_STEPS = 100
# Hidden width of each fold's head (at most the round's own). Narrower heads would make the check
# about 2x faster, but at 128 and 256 the stated precision was further from the truth on
# Fashion-MNIST and CIFAR-10 (calibration_fold_hidden_*.json).
FOLD_HIDDEN = 512


@dataclass(frozen=True)
class FoldHeads:
    """A check's fold heads and what they were trained on: ``fold_of`` maps each anchor's image id
    to its fold, ``classes`` to its class, ``results[k]`` is fold ``k``'s trained head (None for
    a fold with too few classes), trained under ``config`` on features ``features_key``.

    The next check reuses them, with their folds, when its anchors, fold count, config and
    features are the same (a round whose batch was accepted without a rejection adds no anchor):
    it is then another draw of the same cross-fitting, at the cost of its embedding passes alone.
    Heads that went on training when anchors were added (30 more steps each, every anchor kept in
    its fold) stated the precision further from the truth for a careful reviewer on the bundled
    sample in three seeds of three (calibration_fold_continued*.json), so new anchors retrain."""

    fold_of: dict[int, int]
    classes: dict[int, int]
    results: tuple[TrainResult | None, ...]
    config: TrainConfig
    features_key: str = ""

    def same(self, anchor_ids: np.ndarray, anchor_classes: np.ndarray, folds: int, config: TrainConfig,
             features_key: str) -> bool:
        """Whether a check of anchors ``anchor_ids [A]`` of ``anchor_classes [A]`` may reuse these heads."""
        return (len(self.results) == folds and config == self.config and features_key == self.features_key
                and self.classes == dict(zip(anchor_ids.tolist(), anchor_classes.tolist(), strict=True)))


@dataclass(frozen=True)
class AnchorCheck:
    """Cross-fitted votes: ``held_truth [H]`` and ``held_scores [H, C]`` of the held-out anchors,
    ``ids [Q]`` and ``scores [K, Q, C]`` (one per fold) of the unlabeled images scored;
    ``temperature`` fitted on the held-out anchors; ``boot [B]`` the temperatures fitted on
    bootstrap resamples of them and ``shift [B]`` each resample's calibration-in-the-large residual
    (fraction right minus the mean stated probability of the predicted class): the intervals so
    include how well a few anchors stand for the pool, not only the temperature's spread.
    ``offset`` is that residual on all held-out anchors, added to every probability stated."""

    held_truth: np.ndarray
    held_scores: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    temperature: float
    boot: np.ndarray
    shift: np.ndarray
    offset: float = 0.0
    heads: FoldHeads | None = field(default=None, compare=False, repr=False)

    @property
    def accuracy(self) -> float:
        """Held-out accuracy of the anchor-only votes on the verified labels."""
        return float((self.held_scores.argmax(1) == self.held_truth).mean())

    def right(self, image_ids: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(p [M], boot [B, M])``: probability that image ``image_ids[i]`` is of ``classes[i]``."""
        where = {int(i): r for r, i in enumerate(self.ids)}
        rows = np.array([where[int(i)] for i in image_ids], dtype=np.int64)
        cls = np.asarray(classes, dtype=np.int64)
        if not rows.size:
            return np.zeros(0), np.zeros((self.boot.size, 0))
        logs = np.log(np.maximum(self.scores[:, rows].astype(np.float64), 1e-12))  # [K, M, C], once for every T
        own = logs[:, np.arange(rows.size), cls]  # [K, M]

        def pick(t: float) -> np.ndarray:  # each fold's probability of the class (tempered), averaged over the folds
            z = logs / t
            top = z.max(axis=2)
            return np.mean(np.exp(own / t - top) / np.exp(z - top[..., None]).sum(axis=2), axis=0)

        boot = np.stack([np.clip(pick(t) + d, 0.0, 1.0) for t, d in zip(self.boot, self.shift, strict=True)])
        return np.clip(pick(self.temperature) + self.offset, 0.0, 1.0), boot

    def right_of(self, suggestions: Sequence[Suggestion]) -> tuple[list[Suggestion], np.ndarray, np.ndarray]:
        """The ``suggestions`` this check scored, with :meth:`right`'s ``(p [M], boot [B, M])`` for them."""
        scored = set(self.ids.tolist())
        rows = [s for s in suggestions if s.image_id in scored]
        p, boot = self.right(np.array([s.image_id for s in rows], dtype=np.int64),
                             np.array([s.class_id for s in rows], dtype=np.int64))
        return rows, p, boot

    def still_unlabeled(self, labeled: Iterable[int]) -> AnchorCheck:
        """The same check over the scored images not in ``labeled``."""
        done = set(labeled)
        keep = np.array([int(i) not in done for i in self.ids], dtype=bool)
        return replace(self, ids=self.ids[keep], scores=self.scores[:, keep])

    def describe(self) -> str:
        h = self.held_truth.size
        return (f"checked on {h} held-out verified label(s) by models that never saw an unverified label "
                f"(they got {self.accuracy:.0%} of them right)")


def _folds(labels: np.ndarray, rows: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``[len(rows)]`` fold of each anchor row: shuffled within its class, then dealt round-robin."""
    out = np.empty(rows.size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels[rows]):
        members = np.flatnonzero(labels[rows] == c)
        out[rng.permutation(members)] = np.arange(members.size) % folds
    return out


def _vote(train_emb: np.ndarray, train_cls: np.ndarray, query: np.ndarray, num_classes: int, tau: float | None,
          knn_backend: str) -> tuple[np.ndarray, float]:
    """``(scores [Q, C], tau)``: distance-weighted kNN vote of ``query [Q, D]`` among ``train_emb [L, D]``."""
    k = min(10, train_cls.size)
    d, nn = knn_search(query, train_emb, k, backend=knn_backend)
    d = np.maximum(d.astype(np.float64), 0.0)
    tau = vote_temperature(d[:, 0]) if tau is None else tau
    scores, _ = knn_class_scores(d, train_cls[nn], num_classes, mode="vote", tau=tau)
    return scores, tau


def _read_once(features: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(read [R], cached [R, F])``: the distinct ``rows`` sorted (file order) and their features,
    read once in the features' own dtype (float16 stays float16; other dtypes become float32)."""
    read = np.unique(rows)
    block = np.asarray(features[read])
    return read, block if block.dtype in (np.float16, np.float32) else block.astype(np.float32)


def anchor_check(features: Any, labels: np.ndarray, ids: np.ndarray, anchors: np.ndarray, num_classes: int,
                 train: TrainConfig, folds: int, *, extra: np.ndarray | None = None, seed: int = 0,
                 knn_backend: str = "auto", precision: str = "auto", previous: FoldHeads | None = None,
                 features_key: str = "") -> AnchorCheck | None:
    """Cross-fitted anchor-only votes (module docstring).

    ``features [N, F]`` frozen features, ``labels [N]`` (-1 = unlabeled), ``ids [N]``,
    ``anchors [N]`` bool. Every unlabeled row is scored when there are at most 5,000, else a
    fixed random sample of them plus the rows ``extra`` (e.g. the batch). The rows are read
    once for all folds. ``precision`` is the fold heads' embedding pass
    (:func:`~labeltool.train.head.embed_features`). ``previous``: the last check's
    :class:`FoldHeads` (``AnchorCheck.heads``), reused when :meth:`FoldHeads.same` holds for
    these anchors and ``features_key`` (which feature space ``features`` are). ``None`` with
    fewer than :data:`MIN_ANCHORS` anchors, fewer than two anchor classes, or ``folds < 2``."""
    features = released_reads(features)
    anchor_rows = np.flatnonzero(np.asarray(anchors, dtype=bool) & (labels >= 0))
    if folds < 2 or anchor_rows.size < MIN_ANCHORS or np.unique(labels[anchor_rows]).size < 2:
        return None
    anchor_ids, anchor_cls = np.asarray(ids)[anchor_rows], labels[anchor_rows]
    unl = _scored_rows(labels, extra, seed)
    steps = min(train.max_steps, FOLD_STEPS)
    # heads on the pool's cached features, whatever network the round itself trained
    cfg = replace(train, mode="head", finetune=None, backbone=None, max_steps=steps,
                  min_steps=min(train.min_steps, steps), hidden_dim=min(train.hidden_dim, FOLD_HIDDEN))
    reuse = previous if previous is not None and previous.same(anchor_ids, anchor_cls, folds, cfg, features_key) else None
    fold_of = (_folds(labels, anchor_rows, folds, seed) if reuse is None
               else np.array([reuse.fold_of[int(i)] for i in anchor_ids], dtype=np.int64))
    read, cached = _read_once(features, np.concatenate([anchor_rows, unl]))
    held_truth, held_scores, pool_scores = [], [], []
    results: list[TrainResult | None] = []
    used = 0
    for k in range(folds):
        held = anchor_rows[fold_of == k]
        fit_rows = anchor_rows[fold_of != k]
        if np.unique(labels[fit_rows]).size < 2:
            results.append(None)
            continue
        x = cached[np.searchsorted(read, np.concatenate([fit_rows, held, unl]))]
        sub = np.concatenate([labels[fit_rows], np.full(held.size + unl.size, -1)])
        res = _fold_head(None if reuse is None else reuse.results[k], x, sub, num_classes, cfg, k)
        results.append(res)
        emb = unit_rows(embed_features(res.head, x, device=cfg.device, precision=precision))
        h_scores, scores = _fold_votes(emb, labels[fit_rows].astype(np.int64), held.size, num_classes, knn_backend)
        pool_scores.append(scores)
        held_truth.append(labels[held].astype(np.int64))
        held_scores.append(h_scores)
        used += 1
    if not used:
        return None
    truth, hs = np.concatenate(held_truth), np.concatenate(held_scores)
    boot, shift = _resampled(hs, truth, seed)
    t = fit_temperature(hs, truth)
    offset = float(((hs.argmax(1) == truth) - tempered(hs, t).max(1)).mean())
    heads = FoldHeads(dict(zip(anchor_ids.tolist(), fold_of.tolist(), strict=True)),
                      dict(zip(anchor_ids.tolist(), anchor_cls.tolist(), strict=True)), tuple(results), cfg,
                      features_key)
    return AnchorCheck(truth, hs, ids[unl], np.stack(pool_scores), t, boot, shift, offset, heads)


def _fold_head(before: TrainResult | None, x: np.ndarray, sub: np.ndarray, num_classes: int, cfg: TrainConfig,
               k: int) -> TrainResult:
    """Fold ``k``'s head: ``before`` when reused, else trained on ``x [R, F]`` with labels ``sub [R]``
    (kept without its Adam moments: a reused head does not train on)."""
    if before is not None:
        return before
    return replace(train_head(x, sub, num_classes, replace(cfg, seed=cfg.seed * 7919 + k + 1)), optimizer_state={})


def _scored_rows(labels: np.ndarray, extra: np.ndarray | None, seed: int) -> np.ndarray:
    """The unlabeled rows the check scores: all of them up to :data:`_POOL_SAMPLE`, else a seeded
    sample of that many plus the unlabeled rows of ``extra``."""
    unl = np.flatnonzero(labels < 0)
    if unl.size <= _POOL_SAMPLE:
        return unl
    picked = np.random.default_rng(seed).choice(unl, _POOL_SAMPLE, replace=False)
    return np.union1d(picked, np.intersect1d(unl, np.asarray(extra if extra is not None else [], dtype=np.int64)))


def _fold_votes(emb: np.ndarray, fit_cls: np.ndarray, n_held: int, num_classes: int,
                knn_backend: str) -> tuple[np.ndarray, np.ndarray]:
    """``(held [H, C], pool [Q, C])`` votes among a fold's fit rows: ``emb [L + H + Q, D]`` holds
    the fit rows (classes ``fit_cls [L]``), then the held-out anchors, then the pool rows; the
    vote's temperature is the pool's."""
    fit = fit_cls.size
    pool, tau = _vote(emb[:fit], fit_cls, emb[fit + n_held :], num_classes, None, knn_backend)
    held, _ = _vote(emb[:fit], fit_cls, emb[fit : fit + n_held], num_classes, tau, knn_backend)
    return held, pool


def _resampled(scores: np.ndarray, truth: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Temperatures ``[B]`` and calibration residuals ``[B]`` on Bayesian-bootstrap resamples of
    the held-out anchors (``scores [H, C]``, ``truth [H]``)."""
    rng = np.random.default_rng(seed)
    right = scores.argmax(1) == truth
    weights = np.stack([rng.dirichlet(np.ones(truth.size)) for _ in range(_RESAMPLES)])  # [B, H]
    temps = fit_temperatures(scores, truth, weights * truth.size)
    stated = {float(t): tempered(scores, float(t)).max(1) for t in np.unique(temps)}
    shifts = np.array([float((w * (right - stated[float(t)])).sum()) for w, t in zip(weights, temps, strict=True)])
    return temps, shifts
