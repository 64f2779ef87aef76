"""On-disk cache of backbone features, keyed by image content hash and memory-mapped.

Files per cache key (backbone + input size + checkpoint), in the project's ``embeddings/``:
- ``<key>.f16``   raw float16 rows of ``dim`` values, appended in batches;
- ``<key>.rows``  text index, one ``<sha256> <row> <crc32>`` line per cached image; the CRC-32
  covers the image's hash and the row's bytes, so a row overwritten (with any values) or an
  index line pointing at another image's row is detected.

Rows are written and fsynced before their index lines, so a crash can leave unindexed rows
(wasted space, recomputed next time) but never an index line that points at missing data. An
index line counts only once its newline is written: a crash in the middle of a line could
otherwise leave ``<sha> 12`` where ``<sha> 123`` was meant. Appends hold an exclusive ``flock``
so two processes cannot interleave rows.

Rows are verified when they are first looked up (:meth:`FeatureCache.rows_for`, which every
round's pool goes through): one read of those rows, checking each checksum and that the values
are finite; a failure raises :class:`FeatureCacheDamagedError` naming the file. Caches written
before checksums existed have ``<sha256> <row>`` lines: they still open, their rows count as
unverified (:attr:`FeatureCache.unverified`) and are only checked for non-finite values; rows
appended later get checksums.
"""

from __future__ import annotations

import fcntl
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_DTYPE = np.float16
_VERIFY_CHUNK = 8192  # rows read at a time while verifying


class FeatureCacheDamagedError(ValueError):
    """A feature cache file holds damaged data; the message names it and says what to do."""

    def __init__(self, path: Path, what: str, cache: FeatureCache | None = None) -> None:
        files = f"{cache.data_path} and {cache.index_path}" if cache is not None else str(path)
        super().__init__(f"feature cache {path} is damaged: {what}; delete {files} and run embed "
                         "again (the features are recomputed from the images)")
        self.path = path


def row_checksum(sha256: str, row: bytes | memoryview | np.ndarray) -> int:
    """CRC-32 of an image's hash followed by its feature row's bytes (``[dim]`` float16)."""
    data = np.ascontiguousarray(row, dtype=_DTYPE).tobytes() if isinstance(row, np.ndarray) else row
    return zlib.crc32(data, zlib.crc32(sha256.encode("ascii")))


def _parse_index_line(line: str) -> tuple[str, int, int | None] | None:
    """``(sha256, row, crc or None)`` of a well-formed index line, else None."""
    parts = line.split()
    if len(parts) not in (2, 3) or len(parts[0]) != 64 or not parts[1].isdigit():
        return None
    if len(parts) == 2:
        return parts[0], int(parts[1]), None
    crc = parts[2]
    if len(crc) != 8 or any(ch not in "0123456789abcdef" for ch in crc):
        return None
    return parts[0], int(parts[1]), int(crc, 16)


def _ends_cleanly(path: Path) -> bool:
    """The file is missing, empty or ends with a newline."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except FileNotFoundError:
        return True


class FeatureCache:
    """Append-only feature rows for one backbone configuration."""

    def __init__(self, directory: str | Path, key: str, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"feature dimension must be positive, got {dim}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.dim = int(dim)
        self.data_path = self.dir / f"{key}.f16"
        self.index_path = self.dir / f"{key}.rows"
        meta_path = self.dir / f"{key}.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                stored_dim = int(meta["dim"])
            except (ValueError, KeyError, TypeError):
                raise FeatureCacheDamagedError(meta_path, "its metadata is unreadable", self) from None
            if stored_dim != self.dim:
                raise ValueError(
                    f"feature cache {self.data_path} holds {meta['dim']}-d rows, expected {self.dim}; "
                    "delete it to rebuild"
                )
        else:
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"dim": self.dim, "dtype": "float16", "key": key}))
            os.replace(tmp, meta_path)
        self._rows: dict[str, int] = {}
        self._checksums: dict[str, int | None] = {}
        self._verified: set[tuple[str, int]] = set()
        self._index_at: tuple[tuple[int, int], int, int] | None = None  # (file identity, bytes read, data rows)
        self.refresh()

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(_DTYPE).itemsize

    def refresh(self) -> None:
        """Re-read the index (another process may have appended): only the lines added since the
        last read, or all of it when the index was replaced or shrank or the data file shrank."""
        n_data = self._data_rows()
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            self._rows, self._checksums, self._index_at = {}, {}, None
            return
        ident, at = (st.st_dev, st.st_ino), self._index_at
        if at is not None and at[0] == ident and st.st_size >= at[1] and n_data >= at[2]:
            rows, checksums, pos = self._rows, self._checksums, at[1]
        else:
            rows, checksums, pos = {}, {}, 0
        with open(self.index_path, "rb") as fh:
            fh.seek(pos)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # unterminated last line: cut short by a crash (or still being written)
                pos += len(raw)
                parsed = _parse_index_line(raw.decode("ascii", errors="replace"))
                if parsed is not None and parsed[1] < n_data:
                    rows[parsed[0]], checksums[parsed[0]] = parsed[1], parsed[2]
        self._rows, self._checksums, self._index_at = rows, checksums, (ident, pos, n_data)

    def _data_rows(self) -> int:
        try:
            return self.data_path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

    @property
    def unverified(self) -> int:
        """Indexed rows without a checksum (written before checksums existed)."""
        return sum(1 for c in self._checksums.values() if c is None)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def missing(self, hashes: Sequence[str]) -> list[str]:
        """The hashes (deduplicated, in first-seen order) that have no cached row."""
        seen: set[str] = set()
        out = []
        for h in hashes:
            if h not in self._rows and h not in seen:
                seen.add(h)
                out.append(h)
        return out

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / f"{self.key}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, hashes: Sequence[str], features: np.ndarray) -> None:
        """Store ``features`` ``[n, dim]`` for ``hashes`` (length n) durably."""
        feats = np.ascontiguousarray(features, dtype=_DTYPE)
        if feats.ndim != 2 or feats.shape != (len(hashes), self.dim):
            raise ValueError(f"expected features of shape ({len(hashes)}, {self.dim}), got {features.shape}")
        if not np.isfinite(feats).all():
            raise ValueError("refusing to cache non-finite features (overflow in float16?)")
        with self._locked():
            with open(self.data_path, "ab") as fh:
                # drop a partial trailing row left by a crash, so rows stay aligned
                size = fh.seek(0, os.SEEK_END)
                if size % self.row_bytes:
                    fh.truncate(size - size % self.row_bytes)
                start = fh.seek(0, os.SEEK_END) // self.row_bytes
                fh.write(feats.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            sums = [row_checksum(h, row) for h, row in zip(hashes, feats, strict=True)]
            lines = "".join(f"{h} {start + i} {c:08x}\n" for i, (h, c) in enumerate(zip(hashes, sums, strict=True)))
            if not _ends_cleanly(self.index_path):
                lines = " interrupted\n" + lines  # end a line cut short by a crash, unparseable
            with open(self.index_path, "a", encoding="ascii") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
        for i, h in enumerate(hashes):
            self._rows[h], self._checksums[h] = start + i, sums[i]
            self._verified.add((h, start + i))

    def matrix(self) -> np.ndarray:
        """All data rows as a read-only memmap ``[rows, dim]`` float16 (empty array if none)."""
        n = self._data_rows()
        if n == 0:
            return np.zeros((0, self.dim), dtype=_DTYPE)
        return np.memmap(self.data_path, dtype=_DTYPE, mode="r", shape=(n, self.dim))

    def rows_for(self, hashes: Sequence[str]) -> np.ndarray:
        """Row numbers ``[n]`` int64 for ``hashes``; ``KeyError`` naming the first uncached one.

        Rows not verified yet by this object are read once and checked (see the module
        docstring); ``FeatureCacheDamagedError`` when any fails.
        """
        try:
            rows = np.fromiter((self._rows[h] for h in hashes), dtype=np.int64, count=len(hashes))
        except KeyError as e:
            raise KeyError(f"image with sha256 {e.args[0]} has no cached features; run embed first") from None
        self._verify([(h, int(r)) for h, r in zip(hashes, rows, strict=True) if (h, int(r)) not in self._verified])
        return rows

    def _verify(self, todo: list[tuple[str, int]]) -> None:
        """Check ``(sha256, row)`` pairs against their checksums (one read of those rows)."""
        if not todo:
            return
        todo = sorted(set(todo), key=lambda item: item[1])
        matrix = self.matrix()
        bad: list[tuple[str, int, str]] = []
        for start in range(0, len(todo), _VERIFY_CHUNK):
            part = todo[start : start + _VERIFY_CHUNK]
            block = np.ascontiguousarray(matrix[[r for _, r in part]])
            finite = ~((block.view(np.uint16) & 0x7C00) == 0x7C00).any(axis=1)  # exponent all ones: inf/nan
            data, width = memoryview(block.tobytes()), self.row_bytes
            for j, ((h, r), ok) in enumerate(zip(part, finite, strict=True)):
                want = self._checksums.get(h)
                if not ok:
                    bad.append((h, r, "values not finite"))
                elif want is not None and row_checksum(h, data[j * width : (j + 1) * width]) != want:
                    bad.append((h, r, "checksum mismatch"))
        if bad:
            h, r, why = bad[0]
            raise FeatureCacheDamagedError(self.data_path, f"{len(bad)} of {len(todo)} rows read fail their check "
                                                           f"(first: row {r}, image {h[:12]}..., {why})", self)
        self._verified.update(todo)

    def gather(self, hashes: Sequence[str]) -> np.ndarray:
        """Features ``[n, dim]`` float32 of ``hashes`` (reads only those rows)."""
        rows = self.rows_for(hashes)
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.matrix()[rows], dtype=np.float32)
