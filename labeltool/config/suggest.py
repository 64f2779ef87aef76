"""How suggestions are scored and selected (saved as JSON with each round)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeltool.config.finetune import is_int
from labeltool.suggest.knn_scores import KNN_CONFIDENCES
from labeltool.suggest.registry import list_sources

BALANCE_MODES = ("prevalence", "none")
SOURCES: tuple[str, ...] = tuple(list_sources())  # the registered suggestion sources, sorted


@dataclass(frozen=True)
class SuggestConfig:
    """How suggestions are scored and selected (saved as JSON with each round).

    - ``source``: a registered suggestion source (:mod:`labeltool.suggest.registry`): ``"knn"``,
      ``"walk"``, ``"softmax"`` or ``"knn+walk"`` (agreement of both).
    - ``confidence``: for kNN, ``"1nn"`` (paper: 1-NN distance) or ``"vote"`` (weighted vote share).
    - ``k``: neighbours looked at for kNN.
    - ``batch_size``: suggestions per batch (``None`` = no limit); ``percent`` instead takes
      ``ceil(p·|U|/100)`` of the remaining unlabeled pool ``U`` and overrides ``batch_size``.
    - ``stratified``: the total is split evenly over the predictable classes (see
      :func:`~labeltool.suggest.select.select`); unused quota is not redistributed.
    - ``min_confidence``: suggestions below it are dropped.
    - ``evidence``: how many supporting labeled images to attach.
    - ``walk_temperature``: ``T`` in ``M = A·Bᵀ / T``. With normalised embeddings the dot
      products lie in [-1, 1], so T = 1 leaves the walk almost uniform and it then mostly follows
      how many labels each class has; 0.1 is the default (measured in benchmarks/README.md:
      corrections per image 0.35 vs 0.67 on CIFAR-10 at 64 px). ``walk_roundtrip``: multiply the
      walk confidence by its round-trip consistency.
    - ``normalize``: L2-normalise embeddings (cosine geometry) for kNN, the walk and evidence.
    - ``balance``: ``"prevalence"`` gives each class a share of the batch in proportion to its
      estimated share of the unlabeled images (so none starves or takes over); ``"none"`` takes
      the most confident whatever their class. ``stratified`` overrides it.
    - ``calibration_folds``: held-out folds of the verified labels on which the stated precision is
      calibrated (each trains one extra head per round); 0 turns calibration off.
    - ``target_accuracy``: the accuracy the coverage meter counts the reviews still needed for.
    - ``warn_below``: a batch whose estimated precision is below it is flagged before acceptance.
    - ``approximate_from``: from this many labeled images on, kNN suggestions find each unlabeled
      image's nearest labeled ones with an approximate faiss index (IVF, or HNSW for a pool much
      larger than the labeled set; its breadth calibrated to recall@1 >= 0.995 against exact search
      on a sample), built once per round; below it the search is exact. Only on the CPU (on a GPU
      the search stays exact). ``None``: always exact. Default 100,000 (benchmarks/README.md §3).
    """

    source: str = "knn"
    confidence: str = "vote"
    k: int = 10
    batch_size: int | None = 100
    percent: float | None = None
    stratified: bool = False
    min_confidence: float = 0.0
    evidence: int = 5
    walk_temperature: float = 0.1
    walk_roundtrip: bool = False
    normalize: bool = True
    balance: str = "prevalence"
    calibration_folds: int = 5
    target_accuracy: float = 0.99
    warn_below: float = 0.9
    approximate_from: int | None = 100_000

    def __post_init__(self) -> None:
        if self.approximate_from is not None and (not is_int(self.approximate_from) or self.approximate_from < 1):
            raise ValueError(f"approximate_from must be None or an integer >= 1, got {self.approximate_from!r}")
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {list(BALANCE_MODES)}, got {self.balance!r}")
        if not is_int(self.calibration_folds) or self.calibration_folds < 0 or self.calibration_folds == 1:
            raise ValueError(f"calibration_folds must be 0 (off) or an integer >= 2, got {self.calibration_folds!r}")
        for name in ("target_accuracy", "warn_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if self.source not in list_sources():
            raise ValueError(f"source must be one of {list_sources()}, got {self.source!r}")
        if self.confidence not in KNN_CONFIDENCES:
            raise ValueError(f"confidence must be one of {list(KNN_CONFIDENCES)}, got {self.confidence!r}")
        if not is_int(self.k) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.batch_size is not None and (not is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {self.batch_size!r}")
        if self.percent is not None and (
            isinstance(self.percent, bool)
            or not isinstance(self.percent, (int, float))
            or not 0 < self.percent <= 100
        ):
            raise ValueError(f"percent must be None or in (0, 100], got {self.percent!r}")
        for name in ("stratified", "walk_roundtrip", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        mc = self.min_confidence
        if isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0.0 <= mc <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {mc!r}")
        if not is_int(self.evidence) or self.evidence < 0:
            raise ValueError(f"evidence must be an integer >= 0, got {self.evidence!r}")
        t = self.walk_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (np.isfinite(t) and t > 0):
            raise ValueError(f"walk_temperature must be a finite number > 0, got {t!r}")

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form of the config."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SuggestConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` listing the valid ones."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown SuggestConfig fields {sorted(unknown)}; valid: {list(cls.__dataclass_fields__)}"
            )
        return cls(**data)  # type: ignore[arg-type]
