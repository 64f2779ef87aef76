"""On-disk cache of backbone features, keyed by image content hash and memory-mapped.

Files per cache key (backbone + input size + checkpoint), in the project's ``embeddings/``:
- ``<key>.f16``   raw float16 rows of ``dim`` values, appended in batches;
- ``<key>.rows``  text index, one ``<sha256> <row>`` line per cached image.

Rows are written and fsynced before their index lines, so a crash can leave unindexed rows
(wasted space, recomputed next time) but never an index line that points at missing data. An
index line counts only once its newline is written: a crash in the middle of a line could
otherwise leave ``<sha> 12`` where ``<sha> 123`` was meant. Appends hold an exclusive ``flock``
so two processes cannot interleave rows.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_DTYPE = np.float16


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
            meta = json.loads(meta_path.read_text())
            if int(meta["dim"]) != self.dim:
                raise ValueError(
                    f"feature cache {self.data_path} holds {meta['dim']}-d rows, expected {self.dim}; "
                    "delete it to rebuild"
                )
        else:
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"dim": self.dim, "dtype": "float16", "key": key}))
            os.replace(tmp, meta_path)
        self._rows: dict[str, int] = {}
        self.refresh()

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(_DTYPE).itemsize

    def refresh(self) -> None:
        """Re-read the index (another process may have appended)."""
        rows: dict[str, int] = {}
        n_data = self._data_rows()
        if self.index_path.exists():
            with open(self.index_path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break  # unterminated last line: cut short by a crash
                    parts = line.split()
                    if len(parts) == 2 and len(parts[0]) == 64 and parts[1].isdigit():
                        row = int(parts[1])
                        if row < n_data:
                            rows[parts[0]] = row
        self._rows = rows

    def _data_rows(self) -> int:
        try:
            return self.data_path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

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
            lines = "".join(f"{h} {start + i}\n" for i, h in enumerate(hashes))
            if not _ends_cleanly(self.index_path):
                lines = " interrupted\n" + lines  # end a line cut short by a crash, unparseable
            with open(self.index_path, "a", encoding="ascii") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
        for i, h in enumerate(hashes):
            self._rows[h] = start + i

    def matrix(self) -> np.ndarray:
        """All data rows as a read-only memmap ``[rows, dim]`` float16 (empty array if none)."""
        n = self._data_rows()
        if n == 0:
            return np.zeros((0, self.dim), dtype=_DTYPE)
        return np.memmap(self.data_path, dtype=_DTYPE, mode="r", shape=(n, self.dim))

    def rows_for(self, hashes: Sequence[str]) -> np.ndarray:
        """Row numbers ``[n]`` int64 for ``hashes``; ``KeyError`` naming the first uncached one."""
        try:
            return np.fromiter((self._rows[h] for h in hashes), dtype=np.int64, count=len(hashes))
        except KeyError as e:
            raise KeyError(f"image with sha256 {e.args[0]} has no cached features; run embed first") from None

    def gather(self, hashes: Sequence[str]) -> np.ndarray:
        """Features ``[n, dim]`` float32 of ``hashes`` (reads only those rows)."""
        rows = self.rows_for(hashes)
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.matrix()[rows], dtype=np.float32)
