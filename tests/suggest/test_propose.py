"""Suggestion scoring through propose: hand-made cases and hypothesis properties, for every source."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from suggest_refs import SUGGEST_SETTINGS, blobs, dense_walk, softmax, sqdist, unit

from labeltool.config import SuggestConfig
from labeltool.suggest.knn_scores import knn_class_scores
from labeltool.suggest.propose import Suggestion, propose
from labeltool.suggest.registry import list_sources, source_info
from labeltool.suggest.select import select

# ----------------------------------------------------------------------------- properties


@st.composite
def problems(draw: st.DrawFn):
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 4))
    c = draw(st.integers(1, 4))
    # small integers: plenty of exact ties and duplicates
    emb = np.array(draw(st.lists(st.integers(-3, 3), min_size=n * d, max_size=n * d)), dtype=np.float32)
    emb = emb.reshape(n, d)
    labels = np.array(draw(st.lists(st.integers(-1, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    ids = np.array(
        draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True)), dtype=np.int64
    )
    probs = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n * c, max_size=n * c))).reshape(n, c)
    probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-9)
    probs[probs.sum(1) == 0] = 1.0 / c
    rejected = draw(
        st.lists(st.tuples(st.sampled_from(ids.tolist()), st.integers(0, c - 1)), max_size=2 * n, unique=True)
    )
    use_percent = draw(st.booleans())
    config = SuggestConfig(
        source=draw(st.sampled_from(list_sources())),
        confidence=draw(st.sampled_from(["1nn", "vote"])),
        k=draw(st.integers(1, 6)),
        batch_size=None if use_percent else draw(st.one_of(st.none(), st.integers(1, 12))),
        percent=draw(st.floats(0.5, 100.0)) if use_percent else None,
        stratified=draw(st.booleans()),
        min_confidence=draw(st.sampled_from([0.0, 0.0, 0.3, 0.9])),
        evidence=draw(st.integers(0, 3)),
        walk_temperature=draw(st.sampled_from([0.5, 1.0, 3.0])),
        walk_roundtrip=draw(st.booleans()),
        normalize=draw(st.booleans()),
    )
    return emb, labels, ids, probs, rejected, config, c


@SUGGEST_SETTINGS
@given(problems())
def test_propose_properties(problem) -> None:
    emb, labels, ids, probs, rejected, config, c = problem
    out = propose(
        emb, labels, ids, config, rejected=rejected, probs=probs, num_classes=c, knn_backend="numpy"
    )
    # determinism, also with the rejections given in another order
    again = propose(
        emb.copy(),
        labels.copy(),
        ids.copy(),
        config,
        rejected=list(reversed(rejected)),
        probs=probs,
        num_classes=c,
        knn_backend="numpy",
    )
    assert out == again

    label_of = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    unlabeled = [i for i, y in label_of.items() if y == -1]
    rej = set(rejected)
    assert [s.rank for s in out] == list(range(len(out)))
    row_of = {i: r for r, i in enumerate(ids.tolist())}

    def rest(s: Suggestion) -> float:
        """softmax's second key: the probability held by the other classes (less first)."""
        p = np.asarray(probs[row_of[s.image_id]], dtype=np.float64).copy()
        p[s.class_id] = 0.0
        return float(p.sum())

    keys = [(-s.confidence, rest(s) if config.source == "softmax" else 0.0, s.image_id) for s in out]
    assert keys == sorted(keys)
    assert len({s.image_id for s in out}) == len(out)
    for s in out:
        assert label_of[s.image_id] == -1, "never suggests a labeled image"
        assert (s.image_id, s.class_id) not in rej, "never a rejected pair"
        assert 0 <= s.class_id < c
        assert 0.0 <= s.confidence <= 1.0
        assert s.confidence >= config.min_confidence
        assert s.source == config.source
        assert (s.distance is not None) == source_info(config.source).has_distance
        members = [i for i, y in label_of.items() if y == s.class_id]
        assert len(s.evidence) == min(config.evidence, len(members))
        assert set(s.evidence) <= set(members)

    if config.percent is not None:
        total = math.ceil(config.percent * len(unlabeled) / 100 - 1e-9)
    else:
        total = config.batch_size
    if total is not None:
        assert len(out) <= total
        if config.stratified:
            n_pred = c if not source_info(config.source).needs_labels else len({y for y in labels.tolist() if y >= 0})
            if n_pred == 0:  # no class can be predicted (nothing labeled): nothing to suggest
                assert out == []
            else:
                quota = math.ceil(total / n_pred)
                counts = np.bincount([s.class_id for s in out], minlength=c)
                assert counts.max(initial=0) <= quota


@SUGGEST_SETTINGS
@given(st.integers(0, 2**31 - 1), st.sampled_from(list_sources()), st.sampled_from(["1nn", "vote"]))
def test_propose_ignores_row_order(seed: int, source: str, confidence: str) -> None:
    """Same images in another row order → the same suggestions (continuous data, no ties)."""
    emb, labels, ids, _ = blobs(n=30, seed=seed % 1000)
    probs = softmax(np.random.default_rng(seed).normal(size=(30, 3)), 1)
    config = SuggestConfig(
        source=source, confidence=confidence, k=4, batch_size=8, stratified=True, evidence=2
    )
    perm = np.random.default_rng(seed + 1).permutation(30)
    a = propose(emb, labels, ids, config, probs=probs, knn_backend="numpy")
    b = propose(emb[perm], labels[perm], ids[perm], config, probs=probs[perm], knn_backend="numpy")
    assert [(s.image_id, s.class_id, s.evidence, s.rank) for s in a] == [
        (s.image_id, s.class_id, s.evidence, s.rank) for s in b
    ]
    np.testing.assert_allclose([s.confidence for s in a], [s.confidence for s in b], rtol=1e-6)


# ----------------------------------------------------------------------------- kNN confidences


def test_1nn_ranking_is_ascending_distance() -> None:
    emb, labels, ids, _ = blobs(n=80, seed=3)
    config = SuggestConfig(source="knn", confidence="1nn", batch_size=None, normalize=False, evidence=1)
    out = propose(emb, labels, ids, config, knn_backend="numpy")
    lab, unl = labels >= 0, labels == -1
    d = sqdist(emb[unl], emb[lab])
    nn1 = d.min(1)
    expect = ids[unl][np.lexsort((ids[unl], nn1))]
    assert [s.image_id for s in out] == expect.tolist()
    for s in out:
        row = int(np.flatnonzero(ids == s.image_id)[0])
        j = int(np.argmin(sqdist(emb[row : row + 1], emb[lab])[0]))
        assert s.class_id == labels[lab][j]
        assert s.distance == pytest.approx(nn1[np.flatnonzero(ids[unl] == s.image_id)[0]], rel=1e-5)
        assert s.confidence == pytest.approx(1.0 / (1.0 + s.distance))
        assert s.evidence == (int(ids[lab][j]),)


def test_vote_share_constructed_example() -> None:
    # 1-D: labeled at 1 (class 0), 2 (class 1), 4 (class 0); unlabeled at 0 and 10
    emb = np.array([[1.0], [2.0], [4.0], [0.0], [10.0]], dtype=np.float32)
    labels = np.array([0, 1, 0, -1, -1])
    ids = np.array([10, 11, 12, 13, 14])
    config = SuggestConfig(source="knn", confidence="vote", k=3, batch_size=None, normalize=False, evidence=3)
    out = {s.image_id: s for s in propose(emb, labels, ids, config, knn_backend="numpy")}
    tau = np.median([1.0, 36.0])  # 1-NN squared distances of the pool
    w = np.exp(-np.array([1.0, 4.0, 16.0]) / tau)
    assert out[13].class_id == 0
    assert out[13].confidence == pytest.approx((w[0] + w[2] + 1 / 2) / (w.sum() + 1))  # prior 1, C = 2
    assert out[13].evidence == (10, 12)
    assert out[13].distance == pytest.approx(1.0)
    w = np.exp(-np.array([36.0, 64.0, 81.0]) / tau)
    assert out[14].class_id == 0 and out[14].confidence == pytest.approx((w[0] + w[2] + 1 / 2) / (w.sum() + 1))
    assert out[14].confidence < out[13].confidence  # farther from every labeled image
    # the helper agrees, and reports the classes it saw
    scores, seen = knn_class_scores(np.array([[1.0, 4.0, 16.0]]), np.array([[0, 1, 0]]), 3, tau=tau)
    assert scores[0].sum() == pytest.approx(1.0)
    assert seen.tolist() == [[True, True, False]]
    # without the prior: the plain weighted share, and a unanimous vote is exactly 1
    plain, _ = knn_class_scores(np.array([[1.0, 4.0, 16.0]]), np.array([[0, 1, 0]]), 3, tau=tau, prior=0)
    w = np.exp(-np.array([1.0, 4.0, 16.0]) / tau)
    np.testing.assert_allclose(plain[0], [(w[0] + w[2]) / w.sum(), w[1] / w.sum(), 0.0])
    far, _ = knn_class_scores(np.array([[900.0, 950.0]]), np.array([[1, 1]]), 3, tau=1.0, prior=0)
    assert far[0, 1] == 1.0


# ----------------------------------------------------------------------------- walk


def test_walk_propose_uses_walk_probability_and_roundtrip() -> None:
    emb, labels, ids, _ = blobs(n=40, seed=8)
    lab, unl = np.flatnonzero(labels >= 0), np.flatnonzero(labels == -1)
    order = lab[np.argsort(ids[lab])]
    p, r = dense_walk(unit(emb[unl]), unit(emb[order]), labels[order], 3, 0.5)
    for roundtrip, score in [(False, p), (True, p * r)]:
        config = SuggestConfig(source="walk", batch_size=None, walk_temperature=0.5, walk_roundtrip=roundtrip)
        out = {s.image_id: s for s in propose(emb, labels, ids, config, knn_backend="numpy")}
        assert len(out) == unl.size
        for j, row in enumerate(unl):
            s = out[int(ids[row])]
            assert s.class_id == int(np.argmax(score[j]))
            assert s.confidence == pytest.approx(score[j].max(), rel=1e-5)
            assert s.distance is None


def test_knn_plus_walk_agreement() -> None:
    # raw dot products: the walk favours the long labeled vector, kNN the close one
    emb = np.array([[1, 0], [10, 10], [1, 0.1], [9, 9]], dtype=np.float32)
    labels = np.array([0, 1, -1, -1])
    ids = np.array([0, 1, 2, 3])
    base = {"batch_size": None, "normalize": False, "confidence": "1nn"}
    knn = {s.image_id: s for s in propose(emb, labels, ids, SuggestConfig(source="knn", **base))}
    walk = {s.image_id: s for s in propose(emb, labels, ids, SuggestConfig(source="walk", **base))}
    both = propose(emb, labels, ids, SuggestConfig(source="knn+walk", **base))
    assert knn[2].class_id == 0 and walk[2].class_id == 1  # they disagree on image 2
    assert knn[3].class_id == walk[3].class_id == 1
    assert [s.image_id for s in both] == [3]
    assert both[0].class_id == 1
    assert both[0].confidence == pytest.approx(math.sqrt(knn[3].confidence * walk[3].confidence))
    assert both[0].distance == pytest.approx(2.0)
    assert both[0].source == "knn+walk"


# ----------------------------------------------------------------------------- rejections, filters


def test_rejected_best_class_gives_next_class() -> None:
    emb = np.array([[0.0], [1.0], [1.5], [3.0], [0.2]], dtype=np.float32)
    labels = np.array([0, 1, 1, 2, -1])
    ids = np.array([1, 2, 3, 4, 5])
    for confidence in ["1nn", "vote"]:
        cfg = SuggestConfig(source="knn", confidence=confidence, k=4, normalize=False)
        (best,) = propose(emb, labels, ids, cfg)
        assert best.class_id == 0
        (nxt,) = propose(emb, labels, ids, cfg, rejected=[(5, 0)])
        assert nxt.class_id == 1
        assert nxt.evidence == (2, 3)
        if confidence == "1nn":
            assert nxt.distance == pytest.approx(0.64) and nxt.confidence == pytest.approx(1 / 1.64)
        (third,) = propose(emb, labels, ids, cfg, rejected=[(5, 0), (5, 1)])
        assert third.class_id == 2
        assert propose(emb, labels, ids, cfg, rejected=[(5, 0), (5, 1), (5, 2)]) == []
    # with k = 1 only the nearest class is looked at: rejecting it leaves nothing
    cfg = SuggestConfig(source="knn", confidence="1nn", k=1, normalize=False)
    assert propose(emb, labels, ids, cfg, rejected=[(5, 0)]) == []
    # softmax: next probability
    probs = np.tile([0.2, 0.5, 0.3], (5, 1))
    soft = SuggestConfig(source="softmax")
    (s,) = propose(emb, labels, ids, soft, probs=probs, rejected=[(5, 1)])
    assert (s.class_id, s.confidence) == (2, pytest.approx(0.3))
    # walk: next class by walk probability
    walk = SuggestConfig(source="walk", normalize=False)
    p = dense_walk(emb[4:], emb[:4], labels[:4], 3, 1.0)[0][0]
    (w,) = propose(emb, labels, ids, walk, rejected=[(5, int(np.argmax(p)))])
    assert w.class_id == int(np.argsort(-p)[1])


def test_min_confidence_filter_and_labeled_images_skipped() -> None:
    emb, labels, ids, _ = blobs(n=60, seed=9)
    all_ = propose(emb, labels, ids, SuggestConfig(batch_size=None), knn_backend="numpy")
    assert len(all_) == int((labels == -1).sum())
    cut = float(np.median([s.confidence for s in all_]))
    some = propose(emb, labels, ids, SuggestConfig(batch_size=None, min_confidence=cut), knn_backend="numpy")
    assert [s.image_id for s in some] == [s.image_id for s in all_ if s.confidence >= cut]
    assert 0 < len(some) < len(all_)


@pytest.mark.parametrize("source", list_sources())
def test_evidence_is_nearest_labeled_of_class(source: str) -> None:
    emb, labels, ids, _ = blobs(n=70, seed=10)
    probs = np.full((70, 3), 1 / 3)
    cfg = SuggestConfig(source=source, batch_size=None, evidence=4, normalize=False)
    out = propose(emb, labels, ids, cfg, probs=probs, knn_backend="numpy")
    assert out
    for s in out:
        row = int(np.flatnonzero(ids == s.image_id)[0])
        members = np.flatnonzero(labels == s.class_id)
        d = sqdist(emb[row : row + 1], emb[members])[0]
        expect = ids[members][np.lexsort((ids[members], d))][:4]
        assert s.evidence == tuple(int(i) for i in expect)


def test_percent_and_stratified_selection() -> None:
    emb, labels, ids, _ = blobs(n=200, seed=11, frac=0.1)
    n_u = int((labels == -1).sum())
    cfg = SuggestConfig(percent=10, stratified=True, batch_size=3)
    out = propose(emb, labels, ids, cfg, knn_backend="numpy")
    total = math.ceil(n_u * 10 / 100)
    assert len(out) <= total
    counts = np.bincount([s.class_id for s in out], minlength=3)
    assert counts.max() <= math.ceil(total / 3) and counts.sum() == total  # enough candidates in each class
    # 10% of 30 is exactly 3 (no float round-up to 4)
    conf = np.linspace(0.1, 0.9, 30)
    assert len(select(np.arange(30), np.zeros(30, int), conf, SuggestConfig(percent=10), 1)) == 3


def test_degenerate_inputs() -> None:
    emb = np.zeros((3, 2), np.float32)
    ids = np.array([1, 2, 3])
    assert propose(emb, np.array([-1, -1, -1]), ids, SuggestConfig()) == []  # nothing labeled
    assert propose(emb, np.array([0, 1, 0]), ids, SuggestConfig()) == []  # nothing unlabeled
    assert propose(np.zeros((0, 2), np.float32), np.zeros(0, int), np.zeros(0, int), SuggestConfig()) == []
    with pytest.raises(ValueError, match="unique"):
        propose(emb, np.array([0, -1, -1]), np.array([1, 1, 2]), SuggestConfig())
    with pytest.raises(ValueError, match="labels"):
        propose(emb, np.array([0, -2, -1]), ids, SuggestConfig())
    with pytest.raises(ValueError, match="probs"):
        propose(emb, np.array([0, -1, -1]), ids, SuggestConfig(source="softmax"))
    with pytest.raises(ValueError, match="NaN"):
        propose(
            np.array([[0, 0], [np.nan, 1], [1, 1]], np.float32), np.array([0, -1, -1]), ids, SuggestConfig()
        )


@pytest.mark.parametrize("source", list_sources())
def test_memmap_embeddings(tmp_path: Path, source: str) -> None:
    emb, labels, ids, _ = blobs(n=50, seed=12)
    probs = softmax(np.random.default_rng(12).normal(size=(50, 3)), 1)
    np.save(tmp_path / "e.npy", emb.astype(np.float16))
    mm = np.load(tmp_path / "e.npy", mmap_mode="r")
    cfg = SuggestConfig(source=source, batch_size=10)
    out = propose(mm, labels, ids, cfg, probs=probs)
    assert out and out == propose(emb.astype(np.float16), labels, ids, cfg, probs=probs)


# ----------------------------------------------------------------------------- config, output


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": "magic"},
        {"confidence": "2nn"},
        {"k": 0},
        {"k": 2.5},
        {"k": True},
        {"batch_size": 0},
        {"percent": 0},
        {"percent": 101},
        {"stratified": "yes"},
        {"min_confidence": 1.5},
        {"min_confidence": -0.1},
        {"evidence": -1},
        {"walk_temperature": 0},
        {"walk_temperature": float("inf")},
        {"walk_roundtrip": 1},
        {"normalize": None},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SuggestConfig(**kwargs)


def test_config_json_roundtrip() -> None:
    cfg = SuggestConfig(source="knn+walk", percent=5.0, stratified=True, walk_roundtrip=True)
    assert SuggestConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="valid"):
        SuggestConfig.from_dict({"sauce": "knn"})


def test_suggestion_is_frozen() -> None:
    s = Suggestion(1, 2, 0.5, "knn", 0.1, (3,), 0)
    with pytest.raises(AttributeError):
        s.rank = 1  # type: ignore[misc]


def test_softmax_ranks_probabilities_that_round_to_one_by_what_rounded_away() -> None:
    """A scaled-cosine head (ArcFace, s = 30) puts float32 probability 1.0 on a large share of a
    pool; among those the image whose other classes hold least probability must come first."""
    gaps = np.array([20.0, 40.0, 25.0, 60.0, 5.0])  # logit margin of class 0 over class 1
    logits = np.stack([gaps, np.zeros(5), np.full(5, -30.0)], axis=1)
    probs = softmax(logits, axis=1).astype(np.float32)
    assert (probs[[0, 1, 2, 3], 0] == 1.0).all()  # rounded: a plain sort would fall back to image id
    emb = np.eye(5, 3, dtype=np.float32)
    labels = np.full(5, -1)
    rows = propose(emb, labels, np.arange(5), SuggestConfig(source="softmax", batch_size=None, evidence=0),
                   probs=probs, num_classes=3)
    assert [s.image_id for s in rows] == [3, 1, 2, 0, 4]  # largest margin first
    assert [s.rank for s in rows] == [0, 1, 2, 3, 4] and rows[0].confidence == 1.0
