"""The store's write lock: a long scan writes in chunks, so another process's decision gets in."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from labeltool.data.store import Store


def _h(i: int) -> str:
    return format(i, "064x")


def _row(i: int) -> dict:
    return {"relpath": f"img{i}.png", "sha256": _h(i), "size_bytes": 1, "mtime_ns": 0, "width": 1, "height": 1,
            "status": "ok", "error": None, "seed_class_id": None}


def test_a_big_scan_does_not_starve_a_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan wrote every row in one transaction: a 200k-image rescan held the write lock about
    7 s, and another process's decision waited all along (past 30 s it would have failed)."""
    db = tmp_path / "p.sqlite"
    with Store(db) as st:
        st.upsert_images([_row(0)], ["img0.png"])
    monkeypatch.setattr(Store, "UPSERT_CHUNK", 50)
    real_chunk = Store._upsert_chunk

    def slow_chunk(self: Store, rows: list[dict]) -> None:  # a slow disk: each chunk holds the lock 50 ms
        with self._tx():
            time.sleep(0.05)
        real_chunk(self, rows)

    monkeypatch.setattr(Store, "_upsert_chunk", slow_chunk)
    waits: list[float] = []

    def decide() -> None:
        with Store(db) as other:
            time.sleep(0.2)  # the scan is under way
            t0 = time.perf_counter()
            other.add_decisions([{"image_id": 1, "action": "unlabel"}])
            waits.append(time.perf_counter() - t0)

    scanner = Store(db)
    thread = threading.Thread(target=decide)
    thread.start()
    t0 = time.perf_counter()
    scanner.upsert_images([_row(i) for i in range(2000)], [f"img{i}.png" for i in range(1000)])
    scan_seconds = time.perf_counter() - t0
    thread.join()
    assert scan_seconds > 2.0 and waits and waits[0] < 1.0, (scan_seconds, waits)
    assert sum(r.present for r in scanner.images(only_present=False)) == 1000
    scanner.close()
