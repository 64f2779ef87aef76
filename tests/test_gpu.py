"""GPU paths of the loop: extraction, head training and kNN on CUDA agree with the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeltool.config import TrainConfig
from labeltool.models.backbones import create_backbone
from labeltool.models.extract import iter_features
from labeltool.suggest.knn import available_backends, knn_search
from labeltool.train.head import embed_features, train_head

from sample_helpers import SAMPLE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_extraction_matches_cpu() -> None:
    paths = sorted((SAMPLE / "bag").glob("*.png")) + sorted((SAMPLE / "trouser").glob("*.png"))
    bb = create_backbone("efficientnet_lite0")
    cpu = np.concatenate([f for _, f, _ in iter_features(bb, paths, device=torch.device("cpu"), num_workers=0)])
    gpu = np.concatenate([f for _, f, _ in iter_features(bb, paths, device=torch.device("cuda"), num_workers=0)])
    cos = (cpu * gpu).sum(1) / (np.linalg.norm(cpu, axis=1) * np.linalg.norm(gpu, axis=1))
    assert cos.min() > 0.99  # fp16 autocast + channels_last on the GPU, fp32 on the CPU


def test_head_trains_on_cuda_and_separates_classes() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 32)).astype(np.float32) * 3
    labels = np.repeat(np.arange(4), 50)
    feats = centers[labels] + rng.normal(size=(200, 32)).astype(np.float32)
    train_labels = labels.copy()
    train_labels[::2] = -1
    res = train_head(feats, train_labels, 4, TrainConfig(loss="triplet", device="cuda", epochs=20, embedding_dim=8))
    assert res.device.startswith("cuda")
    emb = embed_features(res.head, feats, device="cuda")
    lab = train_labels >= 0
    _, idx = knn_search(emb[~lab], emb[lab], 1)
    acc = (labels[lab][idx[:, 0]] == labels[~lab]).mean()
    assert acc > 0.9


def test_torch_cuda_knn_matches_numpy() -> None:
    assert "torch-cuda" in available_backends()
    rng = np.random.default_rng(1)
    base = rng.normal(size=(5000, 64)).astype(np.float32)
    q = rng.normal(size=(300, 64)).astype(np.float32)
    d_ref, i_ref = knn_search(q, base, 5, backend="numpy")
    d, i = knn_search(q, base, 5, backend="torch-cuda")
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-4, atol=1e-3)
