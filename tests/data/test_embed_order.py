"""Embedding order: labeled images first, then a representative (hash-ordered) sample."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from labeltool.data.embed_order import embedding_order


def _hashes(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_labeled_images_come_first_then_the_rest_by_hash() -> None:
    hashes = _hashes(10)
    labeled = np.zeros(10, dtype=bool)
    labeled[[7, 2]] = True
    order = embedding_order(hashes, labeled)
    assert list(order[:2]) == [2, 7]
    rest = [hashes[i] for i in order[2:]]
    assert rest == sorted(rest) and sorted(order.tolist()) == list(range(10))


def test_a_prefix_is_a_sample_of_every_folder_not_the_first_folder() -> None:
    hashes = _hashes(1000)  # images listed folder by folder: 0-499 in "a", 500-999 in "b"
    order = embedding_order(hashes, np.zeros(1000, dtype=bool))
    first = order[:100]
    assert 30 < int((first < 500).sum()) < 70


def test_one_flag_per_image_is_required() -> None:
    with pytest.raises(ValueError, match="one flag per image"):
        embedding_order(_hashes(3), np.zeros(2, dtype=bool))
    assert embedding_order([], np.zeros(0, dtype=bool)).tolist() == []
