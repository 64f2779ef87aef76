"""The steps behind :class:`labeltool.session.LabelingSession`: train a round, embed, propose,
undo, statistics and in-process prediction. Kept apart so the session stays a thin facade."""

from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labeltool.config import SuggestConfig, TrainConfig
from labeltool.data.decisions import cancelled_ids
from labeltool.data.store import StoredSuggestion
from labeltool.eval.metrics import round_metrics
from labeltool.models.heads import LabelerModel, LossLogits, PrototypeClassifier
from labeltool.suggest.propose import Suggestion
from labeltool.suggest.propose import propose as propose_rows
from labeltool.train.checkpoints import Checkpoint, save_checkpoint
from labeltool.train.head import class_probabilities, embed_features, train_head

if TYPE_CHECKING:
    from labeltool.data.store import Store
    from labeltool.session import LabelingSession


@dataclass
class RoundEmbedding:
    """The pool embedded by one round's head: ids ``[N]``, embeddings ``[N, D]``, probs ``[N, C]``."""

    round: int
    checkpoint: Checkpoint
    ids: np.ndarray
    embeddings: np.ndarray
    probs: np.ndarray | None


def train_round(
    session: LabelingSession, config: TrainConfig, progress: Callable[[int, int, float], None] | None,
    continue_training: bool,
) -> tuple[RoundEmbedding, dict[str, Any]]:
    """Train (continuing from the previous round unless told not to), embed, checkpoint, record.

    ``config.mode == "finetune"`` fine-tunes the backbone too (see :mod:`labeltool.rounds.finetune_round`);
    a head round after a fine-tune round starts a fresh head (the features differ)."""
    pool = session.pool()
    if len(pool) == 0:
        raise RuntimeError(_no_pool_message(session))
    classes = session.classes
    state = session.label_state()
    labels = pool.labels(state.labels)
    n_classes_labeled = len(np.unique(labels[labels >= 0]))
    if n_classes_labeled < 2:
        raise ValueError(
            f"training needs labeled images of at least 2 classes, found {n_classes_labeled}; "
            "put a few images into one sub-folder per class (the seed) or label some by hand"
        )
    if config.mode == "finetune":
        from labeltool.rounds.finetune_round import train_finetune_round

        return train_finetune_round(session, config, labels, pool, progress, continue_training)
    init, moments = None, None
    if continue_training:
        try:
            prev = session.checkpoint()
            if not prev.finetuned:
                init, moments = (prev.head, prev.loss), prev.load_optimizer_state()
        except RuntimeError:
            init = None
    spec = session.backbone_spec
    rid = session.store.start_round({
        "train": config.to_json(), "backbone": spec.to_json(), "feature_key": spec.cache_key(),
        "continued_from": init is not None,
    })
    t0 = time.perf_counter()
    result = train_head(pool.features, labels, len(classes), config, init=init, optimizer_state=moments,
                        progress=progress)
    emb = embed_features(result.head, pool.features, device=config.device)
    probs = class_probabilities(result.loss, emb)
    meta = {
        "train_config": config.to_json(), "backbone": spec.to_json(), "classes": classes,
        "feature_key": spec.cache_key(), "n_labeled": int((labels >= 0).sum()),
    }
    save_checkpoint(session.project.checkpoints_dir, rid, result.head, result.loss, meta,
                    optimizer_state=result.optimizer_state)
    ckpt = Checkpoint(rid, result.head, result.loss, meta, optimizer_state=result.optimizer_state)
    metrics = round_metrics(emb, labels, result.loss, classes)
    metrics.update({
        "round": rid, "train_seconds": round(result.seconds, 3), "round_seconds": round(time.perf_counter() - t0, 3),
        "steps": result.steps, "final_loss": result.losses[-1] if result.losses else None,
        "device": result.device, "n_pool": len(pool),
        "review": review_stats(session),
    })
    session.store.finish_round(rid, metrics)
    return RoundEmbedding(rid, ckpt, pool.ids, emb, probs), metrics


def embed_round(session: LabelingSession, ckpt: Checkpoint) -> RoundEmbedding:
    """Re-embed the pool with a restored checkpoint (after reopening a project)."""
    if ckpt.finetuned:
        from labeltool.rounds.finetune_round import embed_finetuned_round

        return embed_finetuned_round(session, ckpt)
    pool = session.pool()
    if ckpt.head.in_dim != pool.features.shape[1]:
        raise RuntimeError("the saved round was trained on other features; train a new round")
    emb = embed_features(ckpt.head, pool.features)
    return RoundEmbedding(ckpt.round, ckpt, pool.ids, emb, class_probabilities(ckpt.loss, emb))


def propose(session: LabelingSession, config: SuggestConfig) -> list[Suggestion]:
    """Suggestions under the current round, stored with it (replacing earlier ones of that round)."""
    cur = session.current_round()
    state = session.label_state()
    known = {r.id for r in session.store.images() if r.status == "ok"}
    keep = np.array([int(i) in known for i in cur.ids], dtype=bool)
    ids, emb = cur.ids[keep], cur.embeddings[keep]
    labels = np.fromiter((state.labels.get(int(i), -1) for i in ids), dtype=np.int64, count=len(ids))
    probs = cur.probs[keep] if cur.probs is not None else None
    if config.source in ("softmax",) and probs is None:
        raise ValueError(f"loss {cur.checkpoint.loss.name!r} has no classifier; use source 'knn' or 'walk'")
    rows = propose_rows(
        emb, labels, ids, config, rejected=state.rejected, probs=probs, num_classes=len(session.classes),
    )
    session.store.save_suggestions(cur.round, [
        StoredSuggestion(cur.round, s.image_id, s.class_id, s.confidence, s.source, s.rank, s.distance, s.evidence)
        for s in rows
    ])
    return rows


def pending(session: LabelingSession, round_id: int | None) -> list[Suggestion]:
    """Stored suggestions of a round whose image is still unlabeled and whose pair is not rejected."""
    last = session.store.last_finished_round()
    if round_id is None and last is None:
        return []
    rid = round_id if round_id is not None else last.id  # type: ignore[union-attr]
    state = session.label_state()
    out = []
    for s in session.store.suggestions(rid):
        if s.image_id in state.labels or (s.image_id, s.class_id) in state.rejected:
            continue
        out.append(Suggestion(s.image_id, s.class_id, s.confidence, s.source, s.distance, s.evidence, len(out)))
    return out


def undo_last_batch(store: Store) -> list[int]:
    """Cancel every in-force decision of the newest batch that still has one."""
    log = store.decisions()
    cancelled = cancelled_ids(log)
    by_batch: dict[int, list[int]] = {}
    for d in log:
        if d.action != "undo" and d.id not in cancelled:
            by_batch.setdefault(d.batch, []).append(d.id)
    if not by_batch:
        return []
    target = by_batch[max(by_batch)]
    store.add_decisions([{"image_id": _image_of(log, i), "action": "undo", "undoes": i} for i in target])
    return target


def _image_of(log: Sequence[Any], decision_id: int) -> int:
    return next(d.image_id for d in log if d.id == decision_id)


def review_stats(session: LabelingSession) -> dict[str, Any]:
    """How earlier suggestions fared: reviewed, accepted, corrected/rejected, mean confidence of each."""
    log = session.store.decisions()
    cancelled = cancelled_ids(log)
    acc = [d.confidence for d in log if d.action == "accept" and d.id not in cancelled]
    rej = [d for d in log if d.action == "reject" and d.id not in cancelled]
    reviewed = len(acc) + len(rej)
    return {
        "reviewed": reviewed, "accepted": len(acc), "rejected": len(rej),
        "acceptance_rate": round(len(acc) / reviewed, 4) if reviewed else None,
        "mean_conf_accepted": round(float(np.mean([c for c in acc if c is not None])), 4) if any(
            c is not None for c in acc) else None,
    }


def project_stats(session: LabelingSession) -> dict[str, Any]:
    """Counts for ``status`` and the app."""
    images = session.store.images()
    ok = [r for r in images if r.status == "ok"]
    state = session.label_state()
    present = {r.id for r in ok}
    labels = {i: c for i, c in state.labels.items() if i in present}
    classes = session.classes
    per_class = Counter(classes[c] for c in labels.values())
    sources = Counter(state.source[i] for i in labels)
    cache = session.feature_cache()
    embedded = sum(1 for r in ok if r.sha256 in cache)
    rounds = session.store.rounds()
    spec = session.backbone_spec
    return {
        "image_root": str(session.project.image_root), "project_dir": str(session.project.dir),
        "images": len(images), "usable": len(ok), "broken": [(r.relpath, r.error) for r in images if r.status != "ok"],
        "labeled": len(labels), "unlabeled": len(ok) - len(labels), "by_source": dict(sources),
        "classes": classes, "per_class": {c: per_class.get(c, 0) for c in classes},
        "embedded": embedded, "backbone": spec.name, "input_size": spec.input_size,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "rounds": len(rounds), "last_round": rounds[-1].metrics if rounds else None,
    }


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_class_name(name: str) -> str:
    """A class name must be a usable folder name: non-empty, no separators or control characters,
    not ``.``/``..``, at most 100 characters. Returns the NFC-normalised, stripped name."""
    clean = unicodedata.normalize("NFC", str(name)).strip()
    if not clean:
        raise ValueError("a class name cannot be empty")
    if clean in (".", "..") or "/" in clean or "\\" in clean or _CONTROL.search(clean):
        raise ValueError(f"class name {name!r} cannot contain '/', '\\', control characters or be '.'/'..'")
    if len(clean) > 100:
        raise ValueError(f"class name {clean[:20]!r}... is longer than 100 characters")
    return clean


def build_model(session: LabelingSession) -> LabelerModel:
    """Backbone (the round's fine-tuned one, if any) + head + (loss classifier or prototypes of
    the labeled embeddings), CPU, eval."""
    cur = session.current_round()
    ckpt = cur.checkpoint
    if ckpt.loss.has_classifier:
        classifier: torch.nn.Module = LossLogits(ckpt.loss)
    else:
        labels = np.fromiter((session.label_state().labels.get(int(i), -1) for i in cur.ids), dtype=np.int64,
                             count=len(cur.ids))
        mask = labels >= 0
        classifier = PrototypeClassifier.from_embeddings(
            torch.as_tensor(cur.embeddings[mask]), torch.as_tensor(labels[mask]), len(session.classes)
        )
    backbone = ckpt.load_backbone(session.backbone()) if ckpt.finetuned else session.backbone()
    return LabelerModel(backbone, ckpt.head, classifier).cpu().eval()


@torch.inference_mode()
def predict(session: LabelingSession, paths: Sequence[str | Path]) -> tuple[list[str], np.ndarray]:
    """Class names and probabilities ``[n, C]`` for image files, with the current round's model."""
    from labeltool.data.scan import load_image
    from labeltool.models.backbones import make_preprocess

    model = build_model(session)
    pre = make_preprocess(session.backbone_spec)
    x = torch.stack([pre(load_image(p)) for p in paths])
    probs = model(x).numpy()
    classes = session.classes
    return [classes[i] for i in probs.argmax(1)], probs


def _no_pool_message(session: LabelingSession) -> str:
    """Why there is nothing to train on: no usable image at all, or images not embedded yet."""
    rows = session.store.images()
    usable = sum(1 for r in rows if r.status == "ok" and r.present)
    if usable:
        return f"no embedded images; run embed first ({usable} images are waiting)"
    where = session.project.image_root
    skipped = sum(1 for r in rows if r.present and r.status != "ok")
    if skipped:
        return (f"no embedded images: none of the {skipped} files found in {where} could be read as an image "
                "(`labeltool status` lists each one and why)")
    return (f"no embedded images: {where} holds no images; put a few into one sub-folder per class (the seed) "
            "and the rest anywhere below it, then run init (or rescan) again")
