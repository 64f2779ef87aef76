"""Feature cache checksums: rows overwritten, random bytes and swapped index lines are detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labeltool.data.features import FeatureCache, FeatureCacheDamagedError


def _h(i: int) -> str:
    return f"{i:064x}"


def _filled(tmp_path: Path, n: int = 5, dim: int = 4) -> FeatureCache:
    c = FeatureCache(tmp_path, "k", dim)
    c.append([_h(i) for i in range(n)], np.arange(n * dim, dtype=np.float32).reshape(n, dim))
    return c


def _overwrite_row(c: FeatureCache, row: int, values: np.ndarray) -> None:
    with open(c.data_path, "r+b") as fh:
        fh.seek(row * c.row_bytes)
        fh.write(np.asarray(values, np.float16).tobytes())


def test_a_row_overwritten_with_other_valid_values_is_detected(tmp_path: Path) -> None:
    c = _filled(tmp_path)
    _overwrite_row(c, 2, [0.5, 1.5, 2.5, 3.5])
    again = FeatureCache(tmp_path, "k", 4)
    with pytest.raises(FeatureCacheDamagedError) as err:
        again.rows_for([_h(i) for i in range(5)])
    msg = str(err.value)
    assert str(again.data_path) in msg and "1 of 5 rows" in msg and "delete" in msg and "embed" in msg
    assert err.value.path == again.data_path
    np.testing.assert_array_equal(again.rows_for([_h(0), _h(1)]), [0, 1])  # intact rows stay readable


def test_random_bytes_in_the_cache_are_detected(tmp_path: Path) -> None:
    c = _filled(tmp_path, n=50)
    rng = np.random.default_rng(0)
    with open(c.data_path, "r+b") as fh:
        fh.seek(10 * c.row_bytes + 3)
        fh.write(rng.bytes(7 * c.row_bytes))
    with pytest.raises(FeatureCacheDamagedError, match="rows read fail their check"):
        FeatureCache(tmp_path, "k", 4).gather([_h(i) for i in range(50)])


def test_index_lines_pointing_at_another_image_s_row_are_detected(tmp_path: Path) -> None:
    c = _filled(tmp_path, n=3)
    lines = c.index_path.read_text().splitlines()
    sha0, row0, sum0 = lines[0].split()
    sha1, row1, sum1 = lines[1].split()
    c.index_path.write_text("\n".join([f"{sha0} {row1} {sum1}", f"{sha1} {row0} {sum0}", lines[2]]) + "\n")
    with pytest.raises(FeatureCacheDamagedError):
        FeatureCache(tmp_path, "k", 4).rows_for([_h(0)])


def test_rows_are_verified_once_per_cache_object(tmp_path: Path) -> None:
    c = _filled(tmp_path)
    c.rows_for([_h(1)])
    _overwrite_row(c, 1, [9, 9, 9, 9])  # damage after the row was verified: not read again
    c.rows_for([_h(1)])
    with pytest.raises(FeatureCacheDamagedError):
        FeatureCache(tmp_path, "k", 4).rows_for([_h(1)])


def test_an_old_cache_without_checksums_still_opens_unverified_but_non_finite_rows_are_refused(
    tmp_path: Path,
) -> None:
    c = FeatureCache(tmp_path, "k", 2)
    with open(c.data_path, "wb") as fh:
        fh.write(np.array([[1, 2], [3, 4], [np.inf, 0]], np.float16).tobytes())
    c.index_path.write_text(f"{_h(0)} 0\n{_h(1)} 1\n{_h(2)} 2\n")  # the format before checksums
    old = FeatureCache(tmp_path, "k", 2)
    assert len(old) == 3 and old.unverified == 3
    np.testing.assert_array_equal(old.gather([_h(1), _h(0)]), [[3, 4], [1, 2]])
    with pytest.raises(FeatureCacheDamagedError, match="not finite"):
        old.rows_for([_h(2)])
    old.append([_h(3)], np.array([[5, 6]], np.float32))  # new rows get checksums in an old index
    assert FeatureCache(tmp_path, "k", 2).unverified == 3


def test_a_line_cut_short_in_its_checksum_is_ignored(tmp_path: Path) -> None:
    c = _filled(tmp_path, n=1)
    line = c.index_path.read_text()
    c.index_path.write_text(line + line.replace(_h(0), _h(7))[:-4])  # a crash mid-checksum
    c.append([_h(8)], np.ones((1, 4), np.float32))  # ends the cut line as unparseable
    again = FeatureCache(tmp_path, "k", 4)
    assert _h(7) not in again and _h(8) in again and len(again) == 2


def test_unreadable_metadata_names_the_file(tmp_path: Path) -> None:
    _filled(tmp_path)
    (tmp_path / "k.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(FeatureCacheDamagedError, match=r"k\.json"):
        FeatureCache(tmp_path, "k", 4)
