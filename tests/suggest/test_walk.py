"""Association-walk probabilities against a dense float64 reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from suggest_refs import dense_walk, unit

from labeltool.suggest.walk import walk_class_probs, walk_roundtrip


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("temperature", [0.3, 1.0])
def test_walk_matches_dense_reference(normalize: bool, temperature: float) -> None:
    rng = np.random.default_rng(5)
    u = rng.normal(size=(40, 6)).astype(np.float32)
    a = rng.normal(size=(25, 6)).astype(np.float32)
    y = rng.integers(0, 4, 25)
    y[y == 2] = 3  # class 2 has no labeled image
    ref_p, ref_r = dense_walk(unit(u) if normalize else u, unit(a) if normalize else a, y, 4, temperature)
    p = walk_class_probs(u, a, y, 4, temperature=temperature, normalize=normalize)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p, ref_p, rtol=1e-5, atol=1e-7)
    assert np.all(p[:, 2] == 0.0)
    r = walk_roundtrip(u, a, y, 4, temperature=temperature, normalize=normalize)
    np.testing.assert_allclose(r, ref_r, rtol=1e-5, atol=1e-7)
    # chunked over both sides == unchunked
    for cs, lcs in [(7, 4), (1, 1), (40, 25)]:
        kw = {"temperature": temperature, "normalize": normalize, "chunk_size": cs, "labeled_chunk_size": lcs}
        np.testing.assert_allclose(walk_class_probs(u, a, y, 4, **kw), p, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(walk_roundtrip(u, a, y, 4, **kw), r, rtol=1e-5, atol=1e-8)


def test_walk_streaming_is_stable_for_large_logits() -> None:
    rng = np.random.default_rng(6)
    u = (rng.normal(size=(10, 3)) * 50).astype(np.float32)
    a = (rng.normal(size=(12, 3)) * 50).astype(np.float32)
    y = rng.integers(0, 3, 12)
    p = walk_class_probs(u, a, y, 3, temperature=0.5, labeled_chunk_size=5)
    assert np.isfinite(p).all()
    r = walk_roundtrip(u, a, y, 3, temperature=0.5, chunk_size=3, labeled_chunk_size=5)
    assert np.isfinite(r).all()
    np.testing.assert_allclose(r.sum(1), 1.0)
    np.testing.assert_allclose(p, dense_walk(u, a, y, 3, 0.5)[0], atol=1e-6)


def test_walk_rows_from_memmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 4)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.array([3, 5, 8, 20, 29])
    a = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 2, 2])
    np.testing.assert_allclose(
        walk_class_probs(xm, a, y, 3, rows=rows, chunk_size=2),
        dense_walk(x[rows].astype(np.float32), a, y, 3, 1.0)[0],
        rtol=1e-5,
    )
