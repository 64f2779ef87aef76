"""The suggestion-source registry: names, descriptions, dispatch and import layering."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from suggest_refs import blobs, softmax

import labeltool.suggest.registry as registry
from labeltool.config import SOURCES, SuggestConfig
from labeltool.suggest.propose import propose
from labeltool.suggest.registry import SourceInfo, get_source, list_sources, register_source, source_info
from labeltool.suggest.sources.base import ChunkScores, ScoringContext, SuggestionSource

BUILT_IN = {  # name: (needs_probs, needs_labels, uses_knn_confidence, has_distance)
    "knn": (False, True, True, True),
    "walk": (False, True, False, False),
    "softmax": (True, False, False, False),
    "knn+walk": (False, True, True, True),
}


def test_built_in_sources_and_their_descriptions() -> None:
    assert list_sources() == sorted(BUILT_IN)
    assert SOURCES == tuple(list_sources())
    for name, flags in BUILT_IN.items():
        info = source_info(name)
        assert isinstance(info, SourceInfo) and info.name == name
        assert (info.needs_probs, info.needs_labels, info.uses_knn_confidence, info.has_distance) == flags
        assert info.help and "\n" not in info.help
        assert get_source(name).name == name


def test_unknown_source_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid sources: knn, knn\\+walk, softmax, walk"):
        get_source("magic")
    with pytest.raises(ValueError, match="valid sources"):
        source_info("magic")
    with pytest.raises(ValueError, match="source must be one of"):
        SuggestConfig(source="magic")


@pytest.mark.parametrize("source", list_sources())
def test_nothing_labeled_gives_nothing_unless_the_source_needs_no_labels(source: str) -> None:
    emb, _, ids, _ = blobs(n=30, seed=4)
    probs = softmax(np.random.default_rng(4).normal(size=(30, 3)), 1)
    cfg = SuggestConfig(source=source, batch_size=6, stratified=True)
    out = propose(emb, np.full(30, -1), ids, cfg, probs=probs, num_classes=3, knn_backend="numpy")
    if source_info(source).needs_labels:
        assert out == []
    else:
        assert len(out) == 6 and {s.class_id for s in out} <= {0, 1, 2}


@pytest.mark.parametrize("source", list_sources())
def test_distance_only_where_the_source_says_so(source: str) -> None:
    emb, labels, ids, _ = blobs(n=40, seed=5)
    probs = softmax(np.random.default_rng(5).normal(size=(40, 3)), 1)
    out = propose(emb, labels, ids, SuggestConfig(source=source, batch_size=None), probs=probs, knn_backend="numpy")
    assert out and all((s.distance is not None) == source_info(source).has_distance for s in out)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made in the test vanish afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    yield


def test_a_registered_source_is_accepted_and_dispatched_to(scratch_registry: None) -> None:
    @register_source("lowest")
    class LowestClass(SuggestionSource):
        """Lowest allowed class id, confidence 1 / (1 + position)."""

        help = "lowest class id"

        def score(self, ctx: ScoringContext) -> Iterator[ChunkScores]:
            for s, e in ctx.chunks():
                allowed = ~ctx.rejected(s, e)
                cls = np.where(allowed.any(axis=1), allowed.argmax(axis=1), -1).astype(np.int64)
                yield ChunkScores(s, cls, 1.0 / (1.0 + np.arange(s, e)))

    assert "lowest" in list_sources() and source_info("lowest").help == "lowest class id"
    emb = np.zeros((4, 2), np.float32)
    labels = np.array([0, 1, -1, -1])
    ids = np.array([7, 8, 9, 10])
    out = propose(emb, labels, ids, SuggestConfig(source="lowest", batch_size=None), rejected=[(10, 0)])
    assert [(s.image_id, s.class_id, s.confidence, s.source, s.distance) for s in out] == [
        (9, 0, 1.0, "lowest", None),
        (10, 1, 0.5, "lowest", None),
    ]
    assert out[0].evidence == (7,) and out[1].evidence == (8,)


def test_registration_errors(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        @register_source("knn")
        class Other(SuggestionSource):
            help = "another knn"
    with pytest.raises(ValueError, match="help"):
        @register_source("silent")
        class Silent(SuggestionSource):
            pass
    assert "silent" not in list_sources()


def _fresh_python(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_and_sources_never_import_the_config() -> None:
    """labeltool.config (its suggest module) imports the registry, so neither it, the sources nor ``labeltool.suggest`` may import config."""
    _fresh_python(
        "import sys, labeltool.suggest\n"
        "assert not [m for m in sys.modules if m.startswith('labeltool.') and m != 'labeltool.suggest'], sys.modules\n"
        "import labeltool.suggest.registry as r, labeltool.suggest.propose\n"
        "assert r.list_sources() and 'labeltool.config' not in sys.modules\n"
    )
    _fresh_python("import labeltool.config as c; assert 'knn' in c.SOURCES")
