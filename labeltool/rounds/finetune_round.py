"""Fine-tune-mode rounds behind :class:`labeltool.session.LabelingSession`.

A round fine-tunes the backbone (starting from the previous round's fine-tuned backbone, else
the pretrained one) together with the head and loss, then re-extracts the features of the whole
pool with it into a per-round, memory-mapped :class:`~labeltool.data.features.FeatureCache`
(``<backbone key>-ft-round<N>`` in the project's ``embeddings/``), embeds them with the head and
checkpoints head, loss and backbone. Reopening a project reads that cache again (recomputing
it when it is gone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from labeltool.config import TrainConfig
from labeltool.data.features import FeatureCache
from labeltool.data.pool import Pool, RowView
from labeltool.eval.metrics import round_metrics
from labeltool.models.extract import extract_to_cache, pick_device
from labeltool.train.checkpoints import BACKBONE_KEY, Checkpoint, backbone_file_name, save_checkpoint
from labeltool.train.finetune import backbone_state, finetune
from labeltool.train.head import class_probabilities, embed_features, train_head

if TYPE_CHECKING:
    from labeltool.models.backbones import Backbone
    from labeltool.rounds.head_round import RoundEmbedding
    from labeltool.session import LabelingSession


def round_feature_key(session: LabelingSession, round_id: int) -> str:
    """Cache key of the features extracted by round ``round_id``'s fine-tuned backbone."""
    return f"{session.backbone_spec.cache_key()}-ft-round{round_id}"


def finetuned_pool(
    session: LabelingSession, backbone: Backbone, key: str, pool: Pool | None = None, device: str = "auto",
) -> Pool:
    """The pool with features ``[N, F]`` from the per-round cache ``key``, extracting (with
    ``backbone``) the rows it lacks. Images that fail to decode now are left out."""
    pool = pool if pool is not None else session.pool()
    cache = FeatureCache(session.project.embeddings_dir, key, int(pool.features.shape[1]))
    if cache.missing(pool.hashes):
        items = [(h, session.project.image_path(r)) for h, r in zip(pool.hashes, pool.relpaths, strict=True)]
        extract_to_cache(backbone, cache, items, batch_size=session.project.config.embed_batch_size,
                         device=pick_device(device))
        backbone.cpu()
    keep = [i for i, h in enumerate(pool.hashes) if h in cache]
    hashes = [pool.hashes[i] for i in keep]
    return Pool(
        ids=pool.ids[keep], relpaths=[pool.relpaths[i] for i in keep], hashes=hashes,
        features=RowView(cache.matrix(), cache.rows_for(hashes)),
    )


def _previous(session: LabelingSession) -> Checkpoint | None:
    try:
        return session.checkpoint()
    except RuntimeError:
        return None


def train_finetune_round(
    session: LabelingSession, config: TrainConfig, labels: np.ndarray, pool: Pool,
    progress: Callable[[int, int, float], None] | None, continue_training: bool,
) -> tuple[RoundEmbedding, dict[str, Any]]:
    """Fine-tune, re-extract the pool, embed, checkpoint (with the backbone) and record a round.

    ``labels`` ``[N]`` are the pool's current labels (-1 = unlabeled). Without a usable previous
    head (first round, other loss or classes) a fresh head is first trained on the starting
    backbone's cached features, so fine-tuning does not begin from a random head.
    """
    from labeltool.rounds.head_round import RoundEmbedding, review_stats

    classes = session.classes
    ft = config.finetune_config()
    prev = _previous(session) if continue_training else None
    start, start_from = session.backbone(), "pretrained"
    if prev is not None and prev.finetuned:
        start, start_from = prev.load_backbone(session.backbone()), f"round-{prev.round}"
    init, moments = None, None
    if prev is not None and prev.head.in_dim == pool.features.shape[1] and prev.loss.name == config.loss \
            and prev.loss.num_classes == len(classes):
        init = (prev.head, prev.loss)
        # Adam moments only carry over when the backbone is the one they were taken with
        moments = prev.load_optimizer_state() if prev.finetuned else None
    rid = session.store.start_round({
        "train": config.to_json(), "backbone": session.backbone_spec.to_json(),
        "mode": "finetune", "continued_from": init is not None, "backbone_from": start_from,
    })
    key = round_feature_key(session, rid)
    t0 = time.perf_counter()
    warm_seconds = 0.0
    if init is None:
        if start_from == "pretrained":
            start_pool = pool
        else:
            assert prev is not None
            start_pool = finetuned_pool(session, start, prev.meta["feature_key"], pool, ft.device)
        warm = train_head(start_pool.features, start_pool.labels(session.label_state().labels), len(classes), config)
        init, warm_seconds = (warm.head, warm.loss), warm.seconds
    project = session.project
    lab = [(project.image_path(r), int(y)) for r, y in zip(pool.relpaths, labels, strict=True) if y >= 0]
    unl = [project.image_path(r) for r, y in zip(pool.relpaths, labels, strict=True) if y < 0]
    result = finetune(start, init[0], init[1], lab, unl, ft, progress, optimizer_state=moments)
    t1 = time.perf_counter()
    ft_pool = finetuned_pool(session, result.backbone, key, pool, ft.device)
    extract_seconds = time.perf_counter() - t1
    y = ft_pool.labels(session.label_state().labels)
    emb = embed_features(result.head, ft_pool.features, device=ft.device)
    probs = class_probabilities(result.loss, emb)
    meta = {
        "train_config": config.to_json(), "backbone": session.backbone_spec.to_json(), "classes": classes,
        "feature_key": key, "n_labeled": int((y >= 0).sum()), "backbone_from": start_from,
    }
    save_checkpoint(project.checkpoints_dir, rid, result.head, result.loss, meta, backbone_state(result.backbone),
                    optimizer_state=result.optimizer_state)
    meta[BACKBONE_KEY] = backbone_file_name(rid)
    ckpt = Checkpoint(rid, result.head, result.loss, meta, backbone=result.backbone,
                      backbone_file=project.checkpoints_dir / meta[BACKBONE_KEY],
                      optimizer_state=result.optimizer_state)
    metrics = round_metrics(emb, y, result.loss, classes)
    metrics.update({
        "round": rid, "mode": "finetune", "train_seconds": round(warm_seconds + result.seconds, 3),
        "head_warmup_seconds": round(warm_seconds, 3), "finetune_seconds": round(result.seconds, 3),
        "extract_seconds": round(extract_seconds, 3), "round_seconds": round(time.perf_counter() - t0, 3),
        "steps": result.steps, "final_loss": result.losses[-1] if result.losses else None,
        "device": result.device, "amp": result.amp, "images_per_second": round(result.images_per_second, 2),
        "peak_gpu_memory_mb": None if result.peak_memory_mb is None else round(result.peak_memory_mb, 1),
        "trainable_params": result.trainable_params, "stages": ft.stages, "backbone_from": start_from,
        "feature_key": key, "n_pool": len(ft_pool), "review": review_stats(session),
    })
    session.store.finish_round(rid, metrics)
    return RoundEmbedding(rid, ckpt, ft_pool.ids, emb, probs), metrics


def embed_finetuned_round(session: LabelingSession, ckpt: Checkpoint) -> RoundEmbedding:
    """Restore a fine-tune round's embedding of the pool (from its cache, recomputed if missing)."""
    from labeltool.rounds.head_round import RoundEmbedding

    backbone = ckpt.load_backbone(session.backbone())
    pool = finetuned_pool(session, backbone, ckpt.meta["feature_key"])
    emb = embed_features(ckpt.head, pool.features)
    return RoundEmbedding(ckpt.round, ckpt, pool.ids, emb, class_probabilities(ckpt.loss, emb))
