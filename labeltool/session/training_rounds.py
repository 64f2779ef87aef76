"""Rounds, as methods of :class:`labeltool.session.LabelingSession`: load the pool and the
previous round, run the pure :func:`labeltool.rounds.step.step`, save its checkpoint and record
it; restore the newest round after a reopen; propose and list pending suggestions; assemble
the round's model.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labeltool.config import EXTRACT_RUNTIME, SuggestConfig, TrainConfig
from labeltool.data.anchors import round_reviews, verified_images
from labeltool.data.features import FeatureCache
from labeltool.data.pool import Pool, PoolIndex, RowView
from labeltool.data.store import StoredSuggestion
from labeltool.errors import EmptyPoolError, NoRoundError, StaleFeaturesError
from labeltool.eval.calibration import BatchEstimate, batch_estimate, review_bias
from labeltool.eval.review import review_stats
from labeltool.io.check_file import check_path, load_check, save_check
from labeltool.io.embed_job import foreground
from labeltool.models.extract import extract_to_cache, pick_device
from labeltool.models.heads import LabelerModel
from labeltool.models.runtimes import onnx_file
from labeltool.rounds.current import RoundEmbedding, pending_suggestions
from labeltool.rounds.model import assemble_model, predict_files
from labeltool.rounds.proposal import (
    AnchorCheck,
    Carried,
    Coverage,
    coverage_from,
    propose_round,
    uncalibrated,
)
from labeltool.rounds.step import (
    FinetuneImages,
    PoolFeatures,
    RoundInputs,
    RoundResult,
    RoundState,
    continues,
    embed_pool,
    require_two_classes,
    step,
)
from labeltool.suggest.propose import Suggestion
from labeltool.suggest.registry import list_sources, source_info
from labeltool.train.checkpoints import (
    BACKBONE_KEY,
    Checkpoint,
    backbone_file_name,
    latest_round,
    load_checkpoint,
    save_checkpoint,
)
from labeltool.train.finetune import backbone_state

if TYPE_CHECKING:
    from labeltool.data.decisions import LabelState
    from labeltool.data.project import Project
    from labeltool.data.store import Store
    from labeltool.models.backbones import Backbone, BackboneSpec
    from labeltool.rounds.choose import Choice

StepProgress = Callable[[int, int, float], None]


class SessionRounds:
    """Mixin of :class:`~labeltool.session.LabelingSession`: training rounds and their products."""

    project: Project
    store: Store
    _current: RoundEmbedding | None
    _check: tuple[int, tuple[AnchorCheck, np.ndarray, np.ndarray] | None] | None = None
    _carried: Carried | None = None  # what the last proposal computed that the next may reuse (in memory only)
    _check_right: tuple[AnchorCheck, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # ids, cls, p, boot

    if TYPE_CHECKING:  # provided by LabelingSession
        @property
        def classes(self) -> list[str]: ...
        def resolve_mode(self, config: TrainConfig, pool: Pool, labels: np.ndarray,
                         progress: Callable[[str], None] | None = None) -> tuple[TrainConfig, Choice | None]: ...
        def round_base(self, meta: dict[str, Any]) -> Backbone: ...
        def checkpoint_base(self, ckpt: Checkpoint) -> Backbone: ...
        @property
        def backbone_spec(self) -> BackboneSpec: ...
        @property
        def runtime_dir(self) -> Path: ...
        def pool(self) -> Pool: ...
        def pool_index(self) -> PoolIndex: ...
        def label_state(self) -> LabelState: ...
        def backbone(self, with_classifier: bool = False) -> Backbone: ...

    # ------------------------------------------------------------------ training
    def train_round(self, config: TrainConfig, progress: StepProgress | None = None,
                    *, continue_training: bool = True, on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Train on seed + accepted labels, embed the pool, checkpoint and record the round.

        With ``config.mode == "finetune"`` the backbone's last stages are fine-tuned on the images
        too and the pool is re-embedded with it; ``"auto"`` first picks the mode and network
        (``on_stage`` hears each candidate being scored). Returns the round's metrics (including
        ``round``). A background embedding job waits meanwhile (:func:`~labeltool.io.embed_job.foreground`)."""
        with foreground(self.project.cache_dir):
            return self._train_round(config, progress, continue_training, on_stage)

    def _train_round(self, config: TrainConfig, progress: StepProgress | None, continue_training: bool,
                     on_stage: Callable[[str], None] | None) -> dict[str, Any]:
        pool = self.pool()
        if len(pool) == 0:
            raise EmptyPoolError(self._no_pool_message())
        labels = pool.labels(self.label_state().labels)
        require_two_classes(labels)
        config, choice = self.resolve_mode(config, pool, labels, on_stage)
        prev = self._previous_checkpoint() if continue_training else None
        prev_state = None if prev is None else RoundState(prev.head, prev.loss, prev.load_optimizer_state(),
                                                          prev.finetuned)
        inputs = RoundInputs(pool.ids, pool.features, labels, self.classes)
        base = self.round_base({"backbone": {"name": config.backbone}}) if config.backbone else self.backbone()
        go_on = continues(config, prev_state, base.spec.feature_dim or int(pool.features.shape[1]), len(self.classes))
        record: dict[str, Any] = {"train": config.to_json(), "backbone": base.spec.to_json()}
        if choice is not None:
            record["auto"] = choice.to_json()
        images = None
        if config.mode == "finetune":
            start_from = _start_from(prev, base)
            record.update({"mode": "finetune", "continued_from": go_on and start_from != "scratch",
                           "backbone_from": start_from})
            rid = self.store.start_round(record)
            images = self._finetune_images(pool, prev, start_from, self._round_feature_key(rid),
                                           config.finetune_config().device, base)
        else:
            record.update({"feature_key": base.spec.cache_key(), "continued_from": go_on})
            rid = self.store.start_round(record)
        result = step(inputs, config, prev_state, images=images, progress=progress)
        try:
            ckpt = self._save_round(rid, config, result)
        except OSError as e:  # e.g. a full disk: the round stays unfinished, and says why
            with contextlib.suppress(OSError, sqlite3.Error):
                self.store.update_round_metrics(rid, {"failed": str(e)})
            raise
        metrics = {**result.metrics, "round": rid, **result.facts, "network": base.spec.name}
        if choice is not None:
            metrics["auto"] = choice.to_json()
        if result.backbone is not None:
            metrics["feature_key"] = ckpt.meta["feature_key"]
        metrics["review"] = review_stats(self.store.decisions())
        self.store.finish_round(rid, metrics)
        self._current = RoundEmbedding(rid, ckpt, result.ids, result.embeddings, result.probs)
        return metrics

    def _previous_checkpoint(self) -> Checkpoint | None:
        """The newest round's checkpoint, or None when there is none or it no longer fits the pool."""
        try:
            return self.current_round().checkpoint
        except (NoRoundError, StaleFeaturesError):
            return None

    def _save_round(self, rid: int, config: TrainConfig, result: RoundResult) -> Checkpoint:
        """Checkpoint a round's head, loss, moments (and fine-tuned backbone)."""
        spec = result.backbone.spec if result.backbone is not None else self.backbone_spec
        state = result.state
        meta: dict[str, Any] = {
            "train_config": config.to_json(), "backbone": spec.to_json(), "classes": self.classes,
            "feature_key": spec.cache_key(), "n_labeled": int((result.labels >= 0).sum()),
        }
        opt = dict(state.optimizer_state or {})
        directory = self.project.checkpoints_dir
        if result.backbone is None:
            save_checkpoint(directory, rid, state.head, state.loss, meta, optimizer_state=opt)
            return Checkpoint(rid, state.head, state.loss, meta, optimizer_state=opt)
        meta.update({"feature_key": self._round_feature_key(rid), "backbone_from": result.facts["backbone_from"]})
        save_checkpoint(directory, rid, state.head, state.loss, meta, backbone_state(result.backbone),
                        optimizer_state=opt)
        meta[BACKBONE_KEY] = backbone_file_name(rid)
        return Checkpoint(rid, state.head, state.loss, meta, backbone=result.backbone,
                          backbone_file=directory / meta[BACKBONE_KEY], optimizer_state=opt)

    # ------------------------------------------------------------------ fine-tune features
    def _round_feature_key(self, round_id: int) -> str:
        """Cache key of the features extracted by round ``round_id``'s fine-tuned backbone."""
        return f"{self.backbone_spec.cache_key()}-ft-round{round_id}"

    def _finetune_images(self, pool: Pool, prev: Checkpoint | None, start_from: str, key: str,
                         device: str, base: Backbone) -> FinetuneImages:
        resumed = prev is not None and start_from.startswith("round-")
        start = prev.load_backbone(base) if prev is not None and resumed else base
        start_key = prev.meta["feature_key"] if prev is not None and resumed else None

        def features(backbone: Backbone, which: str) -> PoolFeatures:
            return self.features_under(backbone, key if which == "tuned" else str(start_key), pool, device)

        paths = [self.project.image_path(r) for r in pool.relpaths]
        return FinetuneImages(start, start_from, paths, features)

    def features_under(self, backbone: Backbone, key: str, pool: Pool, device: str = "auto") -> PoolFeatures:
        """The pool's features ``[M, F]`` from the per-round cache ``key``, extracting (with
        ``backbone``) the rows it lacks. Images that fail to decode now are left out."""
        cache = FeatureCache(self.project.embeddings_dir, key, backbone.spec.feature_dim or int(pool.features.shape[1]))
        if cache.missing(pool.hashes):
            items = [(h, self.project.image_path(r)) for h, r in zip(pool.hashes, pool.relpaths, strict=True)]
            extract_to_cache(backbone, cache, items, batch_size=self.project.config.embed_batch_size,
                             device=pick_device(device), runtime=EXTRACT_RUNTIME, export_dir=self.runtime_dir)
            onnx_file(self.runtime_dir, key).unlink(missing_ok=True)  # a round's network is exported once
            backbone.cpu()
        keep = np.array([i for i, h in enumerate(pool.hashes) if h in cache], dtype=np.int64)
        hashes = [pool.hashes[i] for i in keep]
        return PoolFeatures(keep, RowView(cache.matrix(), cache.rows_for(hashes)))

    # ------------------------------------------------------------------ the newest round
    def current_round(self) -> RoundEmbedding:
        """Embedding of the pool under the newest trained round (restored from its checkpoint; a
        fine-tune round reads its own feature cache, recomputed if it is missing)."""
        if self._current is None:
            rid = latest_round(self.project.checkpoints_dir)
            if rid is None:
                raise NoRoundError()
            self._current = self._restore(load_checkpoint(self.project.checkpoints_dir, rid))
        return self._current

    def _restore(self, ckpt: Checkpoint) -> RoundEmbedding:
        """Re-embed the pool with a restored checkpoint (after reopening a project)."""
        pool = self.pool()
        state = RoundState(ckpt.head, ckpt.loss, None, ckpt.finetuned)
        if ckpt.finetuned:
            tuned = self.features_under(ckpt.load_backbone(self.checkpoint_base(ckpt)), ckpt.meta["feature_key"], pool)
            emb, probs = embed_pool(state, tuned.features)
            return RoundEmbedding(ckpt.round, ckpt, pool.ids[tuned.keep], emb, probs)
        if ckpt.head.in_dim != pool.features.shape[1]:
            raise StaleFeaturesError("the saved round was trained on other features; train a new round")
        emb, probs = embed_pool(state, pool.features)
        return RoundEmbedding(ckpt.round, ckpt, pool.ids, emb, probs)

    def checkpoint(self) -> Checkpoint:
        """The newest round's checkpoint (``NoRoundError`` before the first round)."""
        return self.current_round().checkpoint

    # ------------------------------------------------------------------ suggestions
    def propose(self, config: SuggestConfig) -> list[Suggestion]:
        """Suggestions for the unlabeled pool under the current round, with their estimated
        precision checked on the verified labels (:mod:`labeltool.rounds.proposal`); stored with the round."""
        cur = self.current_round()
        if source_info(config.source).needs_probs and cur.probs is None:
            usable = [s for s in list_sources() if not source_info(s).needs_probs]
            raise ValueError(f"loss {cur.checkpoint.loss.name!r} has no classifier; use a source "
                             f"that does not need one: {', '.join(usable)}")
        pool, state = self.pool(), self.label_state()
        where = {int(i): r for r, i in enumerate(pool.ids)}
        keep = np.array([int(i) in where for i in cur.ids], dtype=bool)
        emb_rows = np.array([where[int(i)] for i in cur.ids[keep]], dtype=np.int64)
        probs = cur.probs[keep] if cur.probs is not None else None
        labels = pool.labels(state.labels)
        log = self.store.decisions()
        anchors = np.isin(pool.ids, np.fromiter(verified_images(state, log), dtype=np.int64))
        train = cur.checkpoint.train_config
        with foreground(self.project.cache_dir):
            prop = propose_round(pool.features, labels, pool.ids, cur.embeddings[keep], probs, emb_rows,
                                 len(self.classes), self.classes, train, config, anchors=anchors,
                                 rejected=state.rejected, bias=self._review_bias(log), carried=self._carried,
                                 features_key=self.backbone_spec.cache_key())
        self._carried = prop.carried
        self.store.save_suggestions(cur.round, [
            StoredSuggestion(cur.round, s.image_id, s.class_id, s.confidence, s.source, s.rank, s.distance, s.evidence)
            for s in prop.suggestions
        ])
        path = check_path(self.project.cache_dir, cur.round)
        if prop.check is not None:
            save_check(path, prop.check, prop.candidate_ids, prop.candidate_classes)
        else:
            path.unlink(missing_ok=True)
        self.store.update_round_metrics(cur.round, {"proposal": prop.summary()})
        self._check = None
        return prop.suggestions

    def _review_bias(self, log: Sequence[Any]) -> float:
        """How far the precision stated for earlier batches fell short of what review found."""
        stated = {r.id: ((r.metrics or {}).get("proposal") or {}).get("batch_precision", {}).get("value")
                  for r in self.store.rounds()}
        return review_bias({k: float(v) for k, v in stated.items() if v is not None}, round_reviews(log))

    def _round_check(self) -> tuple[AnchorCheck, np.ndarray, np.ndarray] | None:
        """The newest finished round's anchor check with its candidates, or None."""
        last = self.store.last_finished_round()
        if last is None:
            return None
        if self._check is None or self._check[0] != last.id:
            self._check = (last.id, load_check(check_path(self.project.cache_dir, last.id)))
        return self._check[1]

    def batch_estimate(self, suggestions: Sequence[Suggestion]) -> BatchEstimate:
        """Estimated precision of ``suggestions`` of the newest round, with a 90% interval (uncalibrated
        without an anchor check: then the mean confidence, no interval)."""
        loaded = self._round_check()
        if loaded is None:
            n = len(verified_images(self.label_state(), self.store.decisions()))
            return uncalibrated(np.array([s.confidence for s in suggestions]), n)
        _, p, boot = loaded[0].right_of(suggestions)
        return batch_estimate(p, boot, loaded[0].describe())

    def calibrated(self, suggestions: Sequence[Suggestion]) -> list[Suggestion]:
        """``suggestions`` with ``confidence`` replaced by the probability that each is right, as
        the newest round's anchor check states it (unchanged where there is no check)."""
        loaded = self._round_check()
        if loaded is None:
            return list(suggestions)
        rows, p, _ = loaded[0].right_of(suggestions)
        prob = {s.image_id: float(v) for s, v in zip(rows, p, strict=True)}
        return [replace(s, confidence=prob.get(s.image_id, s.confidence)) for s in suggestions]

    def coverage(self, target: float | None = None) -> Coverage | None:
        """The coverage meter now: if every still unlabeled image took the newest round's suggestion."""
        loaded = self._round_check()
        if loaded is None:
            return None
        check, cand_ids, cand_cls = loaded
        if self._check_right is None or self._check_right[0] is not check:  # once per check: each scored
            scored = np.isin(cand_ids, check.ids)  # candidate's probability of being right, and its bootstraps
            self._check_right = (check, cand_ids[scored], cand_cls[scored], *check.right(cand_ids[scored], cand_cls[scored]))
        _, ids, cls, p, boot = self._check_right
        labels = self.label_state().labels
        n_left = self.pool_index().unlabeled_in_pool(labels)
        sub = check.still_unlabeled(labels)
        keep = np.isin(ids, sub.ids)
        goal = SuggestConfig().target_accuracy if target is None else target
        return coverage_from(sub, ids[keep], cls[keep], n_left, goal, scored=(p[keep], boot[:, keep]))

    def pending_suggestions(self, round_id: int | None = None) -> list[Suggestion]:
        """Stored suggestions of a round (default: newest) that no decision has settled yet."""
        if round_id is None:
            last = self.store.last_finished_round()
            if last is None:
                return []
            round_id = last.id
        state = self.label_state()
        return pending_suggestions(self.store.suggestions(round_id), state.labels, state.rejected)

    # ------------------------------------------------------------------ the round's model
    def build_model(self) -> LabelerModel:
        """Backbone + head + classifier of the current round, in eval mode on the CPU."""
        cur = self.current_round()
        labels = cur.labels(self.label_state().labels)
        return assemble_model(cur.checkpoint, self.checkpoint_base(cur.checkpoint), cur.embeddings, labels,
                              len(self.classes))

    def predict(self, paths: Sequence[str | Path]) -> tuple[list[str], np.ndarray]:
        """Predicted class names and probabilities ``[n, C]`` for image files, in process."""
        spec = self.checkpoint_base(self.current_round().checkpoint).spec
        return predict_files(self.build_model(), spec, paths, self.classes)

    def _no_pool_message(self) -> str:
        """Why there is nothing to train on: no usable image at all, or images not embedded yet."""
        rows = self.store.images()
        usable = sum(1 for r in rows if r.status == "ok" and r.present)
        if usable:
            return f"no embedded images; run embed first ({usable} images are waiting)"
        where = self.project.image_root
        skipped = sum(1 for r in rows if r.present and r.status != "ok")
        if skipped:
            return (f"no embedded images: none of the {skipped} files found in {where} could be read as an image "
                    "(`labeltool status` lists each one and why)")
        return (f"no embedded images: {where} holds no images; put a few into one sub-folder per class (the seed) "
                "and the rest anywhere below it, then run init (or rescan) again")


def _start_from(prev: Checkpoint | None, base: Backbone) -> str:
    """Where a fine-tune round on ``base`` starts: the previous round's network when it
    fine-tuned the same one (``"round-N"``), else ``base``'s own weights (``"pretrained"``, or
    ``"scratch"`` for a network at its random initialisation)."""
    if prev is not None and prev.finetuned and (prev.meta.get("backbone") or {}).get("name") == base.spec.name:
        return f"round-{prev.round}"
    return "pretrained" if base.spec.pretrained else "scratch"
