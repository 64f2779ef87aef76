"""Feature cache: append, memmap reads, crash leftovers, dimension mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labeltool.data.features import FeatureCache


def _h(i: int) -> str:
    return f"{i:064x}"


def test_append_gather_and_reopen(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, "k", 4)
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    c.append([_h(1), _h(2), _h(3)], feats)
    assert c.missing([_h(2), _h(4), _h(4)]) == [_h(4)]
    again = FeatureCache(tmp_path, "k", 4)
    assert len(again) == 3
    np.testing.assert_array_equal(again.gather([_h(3), _h(1)]), feats[[2, 0]])
    m = again.matrix()
    assert isinstance(m, np.memmap) and m.shape == (3, 4)


def test_crash_leftovers_are_ignored_and_rows_stay_aligned(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, "k", 2)
    c.append([_h(1)], np.ones((1, 2), np.float32))
    with open(c.data_path, "ab") as fh:  # a crash after writing 1.5 rows and no index lines
        fh.write(np.zeros(3, np.float16).tobytes())
    with open(c.index_path, "a") as fh:
        fh.write(f"{_h(9)} 7\n" + "garbage\n" + _h(5)[:20])
    c2 = FeatureCache(tmp_path, "k", 2)
    assert len(c2) == 1  # the dangling index line (row 7) and the half line are ignored
    c2.append([_h(2)], np.full((1, 2), 2.0, np.float32))
    np.testing.assert_array_equal(c2.gather([_h(1), _h(2)]), [[1, 1], [2, 2]])


def test_dimension_mismatch_and_bad_values(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, "k", 2)
    with pytest.raises(ValueError, match="shape"):
        c.append([_h(1)], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        c.append([_h(1)], np.array([[1e6, 0]], np.float32))  # overflows float16
    with pytest.raises(ValueError, match="holds 2-d rows"):
        FeatureCache(tmp_path, "k", 3)
    with pytest.raises(KeyError, match="run embed"):
        c.gather([_h(42)])


def test_feature_cache_ignores_an_index_line_cut_short(tmp_path: Path) -> None:
    """A crash mid-line could leave ``<sha> 12`` for ``<sha> 123``: wrong features, silently."""
    cache = FeatureCache(tmp_path, "k", 4)
    cache.append([_h(i) for i in range(20)], np.arange(80, dtype=np.float32).reshape(20, 4))
    with open(cache.index_path, "a") as fh:
        fh.write(f"{_h(99)} 1")  # meant "... 19\n"; the crash came first
    cache = FeatureCache(tmp_path, "k", 4)
    assert _h(99) not in cache and len(cache) == 20
    cache.append([_h(100)], np.full((1, 4), 7.0))  # the next append must not glue onto that line
    again = FeatureCache(tmp_path, "k", 4)
    assert _h(99) not in again and len(again) == 21
    np.testing.assert_array_equal(again.gather([_h(100)]), np.full((1, 4), 7.0))
    np.testing.assert_array_equal(again.gather([_h(3)]), [[12, 13, 14, 15]])


def test_refresh_reads_what_another_writer_appended_and_rereads_a_replaced_cache(tmp_path: Path) -> None:
    reader, writer = FeatureCache(tmp_path, "k", 2), FeatureCache(tmp_path, "k", 2)
    writer.append([_h(1), _h(2)], np.ones((2, 2), np.float32))
    reader.refresh()
    assert len(reader) == 2
    with open(reader.index_path, "a") as fh:  # another writer is mid-line: not counted yet
        fh.write(f"{_h(3)} 2")
    writer.append([_h(4)], np.full((1, 2), 4.0, np.float32))  # ends that line as unreadable
    reader.refresh()
    assert _h(3) not in reader and len(reader) == 3
    np.testing.assert_array_equal(reader.gather([_h(4)]), [[4.0, 4.0]])
    for p in (reader.data_path, reader.index_path):  # deleted and rebuilt with other images
        p.unlink()
    FeatureCache(tmp_path, "k", 2).append([_h(7)], np.full((1, 2), 7.0, np.float32))
    reader.refresh()
    assert len(reader) == 1 and _h(7) in reader and _h(1) not in reader
