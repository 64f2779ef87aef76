"""Head trainer internals: samplers, loss read-back, resident versus gathered unlabeled rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labeltool.config import TrainConfig
from labeltool.models import heads
from labeltool.models.heads import ReleasedReads, release_mapped, released_reads
from labeltool.train.head import HeadBatches, TrainResult, embed_features, step_count, train_head
from labeltool.train.sampling import BalancedSampler, CyclingSampler


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), size=st.integers(1, 50), calls=st.integers(1, 30), seed=st.integers(0, 9))
def test_cycling_sampler_draws_every_item_once_per_pass(n: int, size: int, calls: int, seed: int) -> None:
    items = np.arange(100, 100 + n)
    s = CyclingSampler(items, size, np.random.default_rng(seed))
    drawn = [s() for _ in range(calls)]
    for batch in drawn:
        assert len(batch) == min(size, n)
        assert len(set(batch.tolist())) == len(batch)  # distinct within a call
        assert set(batch.tolist()) <= set(items.tolist())
    flat = np.concatenate(drawn)
    counts = np.bincount(flat - 100, minlength=n)
    # after the draws, no item is more than one pass ahead of any other
    assert counts.max() - counts.min() <= 1


def test_cycling_sampler_empty_pool() -> None:
    s = CyclingSampler(np.zeros(0, dtype=np.int64), 8, np.random.default_rng(0))
    assert len(s) == 0 and len(s()) == 0


def test_balanced_sampler_no_duplicates_in_small_classes() -> None:
    labels = np.array([0] * 2 + [1] * 10 + [2] * 7 + [-1] * 5)
    s = BalancedSampler(labels, classes_per_batch=16, samples_per_class=4, rng=np.random.default_rng(0))
    for _ in range(20):
        batch = s()
        assert len(set(batch.tolist())) == len(batch)
        assert np.bincount(labels[batch], minlength=3).tolist() == [2, 4, 4]
    assert s.batch_size == 12


def _toy(n: int = 600, labeled_per_class: int = 10, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.standard_normal((3, dim))[y] * 2 + rng.standard_normal((n, dim))).astype(np.float16)
    labels = np.full(n, -1)
    for c in range(3):
        labels[np.flatnonzero(y == c)[:labeled_per_class]] = c
    return x, labels


def test_history_has_one_loss_per_step_and_progress_reports() -> None:
    x, labels = _toy()
    seen: list[tuple[int, int, float]] = []
    cfg = TrainConfig(loss="triplet", epochs=1, min_steps=23, max_steps=23, device="cpu", hidden_dim=32)
    res = train_head(x, labels, 3, cfg, progress=lambda s, t, v: seen.append((s, t, v)))
    assert res.steps == 23 and len(res.losses) == 23
    assert [s for s, _, _ in seen] == [10, 20, 23]
    assert seen[-1][2] == res.losses[-1]


def test_resident_and_gathered_unlabeled_rows_train_the_same() -> None:
    x, labels = _toy()
    cfg = TrainConfig(loss="association", epochs=1, min_steps=30, max_steps=30, device="cpu", hidden_dim=32,
                      unlabeled_batch=64, dropout=0.0,  # dropout masks depend on row order
                      precision="float32")  # bfloat16 rounds a batch's sum differently in another row order
    a = train_head(x, labels, 3, cfg)  # the 570 unlabeled rows fit: copied to the device once
    b = train_head(x, labels, 3, cfg, resident_bytes=0)  # gathered from the array every step
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-4, atol=1e-5)
    # the same rows in another order: equal losses, and embeddings equal up to the float noise
    # that Adam scales up on near-zero gradients (e.g. the bias feeding the BatchNorm)
    np.testing.assert_allclose(embed_features(a.head, x), embed_features(b.head, x), atol=0.05)


def test_non_finite_loss_is_reported_with_its_step() -> None:
    x, labels = _toy()
    x = x.astype(np.float32)
    x[labels >= 0] = np.inf  # normalising inf rows gives NaN features, so the loss is NaN from step 0
    cfg = TrainConfig(loss="cross_entropy", epochs=1, min_steps=5, max_steps=5, device="cpu", hidden_dim=32)
    with pytest.raises(FloatingPointError, match=r"cross_entropy became nan at step 0"):
        train_head(x, labels, 3, cfg)


def test_same_seed_same_head() -> None:
    x, labels = _toy()
    cfg = TrainConfig(loss="contrastive", epochs=2, min_steps=1, device="cpu", hidden_dim=32)
    a, b = train_head(x, labels, 3, cfg), train_head(x, labels, 3, cfg)
    assert a.losses == b.losses


def _nearest_centroid_accuracy(res: TrainResult, x: np.ndarray, labels: np.ndarray) -> float:
    """Share of the toy's unlabeled rows whose embedding is nearest its class's labeled centroid."""
    emb = embed_features(res.head, x)
    y = np.arange(len(x)) % 3
    cent = np.stack([emb[labels == c].mean(0) for c in range(3)])
    pred = np.argmin(((emb[:, None, :] - cent[None]) ** 2).sum(-1), axis=1)
    return float(np.mean(pred[labels < 0] == y[labels < 0]))


@pytest.mark.parametrize("loss", ["cross_entropy", "triplet", "arcface"])
def test_bfloat16_training_learns_as_float32_does(loss: str) -> None:
    x, labels = _toy()
    cfg = TrainConfig(loss=loss, epochs=1, min_steps=40, max_steps=40, device="cpu", hidden_dim=32)
    f32 = train_head(x, labels, 3, replace(cfg, precision="float32"))
    b16 = train_head(x, labels, 3, replace(cfg, precision="bfloat16"))
    assert (f32.precision, b16.precision) == ("float32", "bfloat16")
    assert f32.losses != b16.losses  # the products really ran in bfloat16
    assert all(np.isfinite(b16.losses))
    assert _nearest_centroid_accuracy(b16, x, labels) >= _nearest_centroid_accuracy(f32, x, labels) - 0.02
    assert _nearest_centroid_accuracy(b16, x, labels) > 0.95
    assert all(p.dtype == torch.float32 for p in b16.head.parameters())  # the weights stay float32


@pytest.mark.parametrize("native", [True, False])
def test_auto_training_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(heads, "native_bf16_available", lambda: native)
    x, labels = _toy()
    res = train_head(x, labels, 3, TrainConfig(epochs=1, min_steps=2, max_steps=2, device="cpu", hidden_dim=32))
    assert res.precision == ("bfloat16" if native else "float32")


def test_unknown_training_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown training precision 'half'; valid: float32, bfloat16, auto"):
        TrainConfig(precision="half")


def test_step_count_is_epochs_of_batches_within_the_bounds() -> None:
    cfg = TrainConfig(epochs=3, min_steps=5, max_steps=40)
    assert step_count(100, 16, cfg) == 21  # 3 epochs of ceil(100 / 16) = 7 batches
    assert step_count(10, 16, cfg) == 5  # at least min_steps
    assert step_count(1000, 16, cfg) == 40  # at most max_steps


def test_a_continued_round_trains_at_most_continued_steps() -> None:
    cfg = TrainConfig(epochs=3, min_steps=5, max_steps=40, continued_steps=12)
    assert step_count(100, 16, cfg, continued=True) == 12  # 21 fresh, capped
    assert step_count(10, 16, cfg, continued=True) == 5  # below the cap: the fresh budget
    x, y = _toy(n=60, labeled_per_class=4)
    small = TrainConfig(device="cpu", min_steps=20, max_steps=20, continued_steps=7, hidden_dim=16, embedding_dim=8)
    first = train_head(x, y, int(y.max()) + 1, small)
    again = train_head(x, y, int(y.max()) + 1, small, init=(first.head, first.loss), optimizer_state=first.optimizer_state)
    assert (first.steps, again.steps) == (20, 7)
    with pytest.raises(ValueError, match="continued_steps"):
        TrainConfig(continued_steps=0)


def test_head_batches_put_unlabeled_rows_after_the_labeled_ones() -> None:
    x, labels = _toy(n=60, labeled_per_class=4)
    labeled = np.flatnonzero(labels >= 0)
    cfg = TrainConfig(classes_per_batch=3, samples_per_class=2, unlabeled_batch=5)
    rng = np.random.default_rng(0)
    with_u = HeadBatches(x, labels, labeled, True, cfg, rng, torch.device("cpu"))
    plan = with_u.plan(4, 1 << 20)
    assert len(plan.labeled) == len(plan.unlabeled) == 4 and with_u.unlabeled is not None
    (ix, iu), *_ = plan.on_device(0, 4, torch.device("cpu"))
    xb, yb = with_u.gather(ix, iu)
    assert xb.shape == (6 + 5, x.shape[1]) and xb.dtype == torch.float32
    assert (yb[:6] >= 0).all() and (yb[6:] == -1).all()
    np.testing.assert_array_equal(xb[:6].numpy(), x[labeled[ix.numpy()]].astype(np.float32))
    unlabeled = xb[6:].numpy()
    assert all((unlabeled[i] == x[np.flatnonzero(labels < 0)].astype(np.float32)).all(1).any() for i in range(5))
    without = HeadBatches(x, labels, labeled, False, cfg, rng, torch.device("cpu"))
    bare = without.plan(2)
    assert bare.unlabeled == [] and without.unlabeled is None
    (ix2, iu2), _ = bare.on_device(0, 2, torch.device("cpu"))
    assert iu2 is None and without.gather(ix2, None)[1].tolist() == y_of(labels, labeled, ix2)


def y_of(labels: np.ndarray, labeled: np.ndarray, ix: torch.Tensor) -> list[int]:
    return labels[labeled[ix.numpy()]].tolist()


class CountingRows:
    """An array ``[N, F]`` that records which rows were read (as a memmap's pages would be)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.read = x, np.zeros(len(x), dtype=np.int64)
        self.shape, self.ndim, self.dtype = x.shape, 2, x.dtype

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        self.read[np.arange(len(self.x))[key]] += 1
        return self.x[key]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("resident_bytes", [1 << 30, 0])
def test_a_run_reads_only_the_unlabeled_rows_its_steps_draw(resident_bytes: int) -> None:
    x, labels = _toy(n=3000)
    rows = CountingRows(x)
    cfg = TrainConfig(loss="association", min_steps=6, max_steps=6, device="cpu", hidden_dim=32, unlabeled_batch=50)
    res = train_head(rows, labels, 3, cfg, resident_bytes=resident_bytes)  # type: ignore[arg-type]
    unl = labels < 0
    assert res.steps == 6 and rows.read[unl].sum() == 6 * 50  # not the 2970 of the pool
    assert rows.read[unl].max() == 1  # each drawn once: six batches of a cycle through the pool
    same = train_head(x, labels, 3, cfg, resident_bytes=resident_bytes)
    assert res.losses == same.losses


@pytest.mark.usefixtures("one_thread")
def test_embedding_precisions() -> None:
    x, labels = _toy(n=300, dim=48)
    res = train_head(x, labels, 3, TrainConfig(loss="cross_entropy", min_steps=20, max_steps=20, device="cpu",
                                               hidden_dim=32))
    with torch.no_grad():
        module = res.head.eval()(torch.as_tensor(x.astype(np.float32))).numpy()
    exact = embed_features(res.head, x, chunk=64)
    np.testing.assert_array_equal(exact, module)  # float32 runs the module itself, chunk by chunk
    fast = embed_features(res.head, x, chunk=64, precision="bfloat16")
    assert np.linalg.norm(fast - exact) / np.linalg.norm(exact) < 1e-2
    with pytest.raises(ValueError, match="unknown embedding precision"):
        embed_features(res.head, x, precision="int8")


@pytest.mark.usefixtures("one_thread")
def test_a_memory_mapped_pool_embeds_the_same_after_its_pages_are_released(tmp_path: Path) -> None:
    x, labels = _toy(n=2000, dim=40)
    np.save(tmp_path / "f.npy", x)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    res = train_head(x, labels, 3, TrainConfig(min_steps=5, max_steps=5, device="cpu", hidden_dim=32))
    first = embed_features(res.head, mapped, chunk=256)
    np.testing.assert_array_equal(first, embed_features(res.head, x, chunk=256))
    np.testing.assert_array_equal(embed_features(res.head, mapped, chunk=256), first)  # re-read after release
    release_mapped(mapped[:10])  # a view of a read-only map: released, still readable
    np.testing.assert_array_equal(np.asarray(mapped[:10]), x[:10])
    release_mapped(x[:10])  # not a map: left alone


@pytest.mark.usefixtures("one_thread")
def test_released_reads_read_what_the_map_holds(tmp_path: Path) -> None:
    x, labels = _toy(n=1500, dim=24)
    np.save(tmp_path / "f.npy", x)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    rows = released_reads(mapped)
    assert isinstance(rows, ReleasedReads) and rows.shape == x.shape and released_reads(rows) is rows
    assert released_reads(x) is x  # an array in memory is read as it is
    pick = np.array([1400, 3, 3, 700, 12])
    np.testing.assert_array_equal(rows[pick], x[pick])  # any order, with repeats
    np.testing.assert_array_equal(rows[np.arange(1500)], x)
    np.testing.assert_array_equal(rows[10:20], x[10:20])
    assert not np.shares_memory(rows[10:20], mapped)  # a copy: the map's pages may go
    cfg = TrainConfig(loss="association", min_steps=4, max_steps=4, device="cpu", hidden_dim=32, unlabeled_batch=50)
    for resident in (1 << 30, 0):
        a = train_head(mapped, labels, 3, cfg, resident_bytes=resident)
        assert a.losses == train_head(x, labels, 3, cfg, resident_bytes=resident).losses
