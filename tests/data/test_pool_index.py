"""PoolIndex: the usable images, which are cached, and counts without reading image rows again."""

from __future__ import annotations

import numpy as np

from labeltool.data.pool import PoolIndex


def test_pool_rows_missing_and_unlabeled_counts() -> None:
    rows = [(1, "a.png", "ha"), (2, "b.png", "hb"), (5, "c.png", None), (7, "d.png", "hd")]
    index = PoolIndex.build((3, 2), rows, {"ha", "hd", "zz"}, (5, [("e.png", "not an image")]))
    assert index.cached.tolist() == [True, False, False, True]
    ids, relpaths, hashes = index.pool_rows()
    assert ids.tolist() == [1, 7] and relpaths == ["a.png", "d.png"] and hashes == ["ha", "hd"]
    assert index.missing == 1  # b.png; c.png has no hash (the scan could not read it): nothing to embed
    assert index.unlabeled_in_pool({7: 0, 2: 1, 99: 0}) == 1
    assert index.id_set == {1, 2, 5, 7} and index.present == 5 and index.unusable == [("e.png", "not an image")]


def test_everything_cached_is_the_index_itself() -> None:
    index = PoolIndex.build((0, 2), [(1, "a", "ha"), (2, "b", "hb")], {"ha", "hb"}, (2, []))
    ids, _, _ = index.pool_rows()
    assert ids is index.ids and index.missing == 0
    empty = PoolIndex.build((0, 0), [], set(), (0, []))
    assert empty.pool_rows()[0].dtype == np.int64 and empty.unlabeled_in_pool({}) == 0
