"""App responsiveness on a 10k-image project: page render time and rerun time per click.

    .venv/bin/python benchmarks/bench_app.py [--images 10000] [--workdir DIR] [--clicks 10] [--no-browser]

How the project is made: ``--images`` small PNGs (28x28, 10 classes, 20 seed images per class in
class folders, the rest unlabeled) are written and scanned like any folder. The backbone is NOT
run: synthetic 1280-d features (a class centre plus noise) are written straight into the
project's FeatureCache, so the numbers measure the app, not feature extraction. Then one round is
trained on those features and a batch of 480 suggestions is proposed.

Measured:
- server side, with streamlit.testing.v1.AppTest (one full script run each): the first render
  (opens the project, makes the 48 thumbnails of the first page), a warm render (cached session
  and thumbnails), a full rerun after clicking "accept" on one image, and each tab's render;
- in the browser (headless Chromium + Playwright, when installed): page load until the 48
  thumbnails are shown, and click-to-update time of the per-image accept, which reruns only the
  review fragment.

Prints a table and writes benchmarks/results/app_render.json.

``--round`` measures something else: one round in the app against the same round through the
command line's path, on a copy of sample_data/ (64 px). The CLI path is what ``labeltool train``
+ ``suggest`` do (``LabelingSession.train_round`` + ``propose``); the app path is
``LabelingSession.run_app_round``, which stops the previous round's UMAP job first and starts the
new round's. Before every measured round the previous round's UMAP projection job is running in
the background (ui/figures.py UMAP_JOBS), as it is in the app after a round; the two paths
alternate ``--repeats`` times in one run. Both train the same 300-step head. Prints
min/median/max of each and the ratio of the medians; writes benchmarks/results/app_round.json.

    .venv/bin/python benchmarks/bench_app.py --round [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))

from _app_project import build_large  # noqa: E402

from labeltool.config import SuggestConfig, TrainConfig  # noqa: E402
from labeltool.session import LabelingSession  # noqa: E402

CLASSES = [f"class_{i:02d}" for i in range(10)]
SEED_PER_CLASS = 20


def make_folder(root: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write ``n`` PNGs; returns relpath → true class index."""
    rng = np.random.default_rng(seed)
    truth: dict[str, int] = {}
    (root / "unlabeled").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % len(CLASSES)
        img = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        img[2 * c : 2 * c + 6, :] += 150  # a class-specific band, so thumbnails differ
        if i < SEED_PER_CLASS * len(CLASSES):
            rel = f"{CLASSES[c]}/s{i:05d}.png"
            (root / CLASSES[c]).mkdir(exist_ok=True)
        else:
            rel = f"unlabeled/u{i:05d}.png"
        Image.fromarray(img).save(root / rel)
        truth[rel] = c
    return truth


def fake_features(session: LabelingSession, truth: dict[str, int], seed: int = 0) -> None:
    """Synthetic features for every usable image, straight into the feature cache."""
    rng = np.random.default_rng(seed)
    cache = session.feature_cache()
    centres = rng.normal(0, 1, (len(CLASSES), cache.dim)).astype(np.float32)
    rows = [r for r in session.store.images() if r.status == "ok" and r.sha256 and r.sha256 not in cache]
    hashes = [r.sha256 or "" for r in rows]
    labels = np.array([truth[r.relpath] for r in rows])
    feats = centres[labels] + rng.normal(0, 1.2, (len(rows), cache.dim)).astype(np.float32)
    cache.append(hashes, feats)


def build(root: Path, n: int) -> dict[str, float]:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    truth = make_folder(root, n)
    t["write_images_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with LabelingSession.open(root) as s:
        t["scan_s"] = time.perf_counter() - t0
        fake_features(s, truth)
        t0 = time.perf_counter()
        m = s.train_round(TrainConfig(epochs=10))
        s.propose(SuggestConfig(batch_size=480))
        t["round_s"] = time.perf_counter() - t0
        t["steps"] = float(m["steps"])
    return t


def timed_run(at: Any) -> float:
    t0 = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return dt


def server_side(root: Path, clicks: int) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    def app(tab: str = "Review") -> Any:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        at.session_state["folder"] = str(root)
        at.session_state["umap_auto"] = False
        at.session_state["tab"] = tab
        return at

    out: dict[str, Any] = {"first_render_s": timed_run(app())}
    warm = [timed_run(app()) for _ in range(3)]
    out["warm_render_s"] = statistics.median(warm)
    at = app()
    at.run()
    out["rerun_s"] = statistics.median([timed_run(at) for _ in range(3)])  # nothing changed
    per_click = []
    for _ in range(clicks):  # decided cards stay in place, disabled: the next undecided one
        key = next(b.key for b in at.button if b.key and b.key.startswith("acc_") and not b.disabled)
        at.button(key=key).click()
        per_click.append(timed_run(at))
    out["full_rerun_per_click_s"] = statistics.median(per_click)
    out["full_rerun_per_click_max_s"] = max(per_click)
    at.number_input(key="page_input").set_value(2)
    out["page_change_s"] = timed_run(at)
    for tab in ("Train", "Explore", "Dataset", "Export"):
        at.session_state["tab"] = tab
        timed_run(at)  # first visit builds caches (PCA of the embedding, ...)
        out[f"tab_{tab.lower()}_s"] = timed_run(at)
    return out


def browser_side(root: Path, clicks: int) -> dict[str, Any]:
    from browser_util import browser_page, missing_browser, running_app, wait_idle

    if (why := missing_browser()) is not None:
        return {"skipped": why}
    from playwright.sync_api import expect

    out: dict[str, Any] = {}
    with running_app(root, image_size=None) as url, browser_page(1500, 1000) as page:
        t0 = time.perf_counter()
        page.goto(url)
        page.get_by_text("Awaiting review").first.wait_for(timeout=600_000)
        wait_idle(page, 600)
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length >= 48", timeout=600_000)
        out["page_load_s"] = time.perf_counter() - t0
        page.reload()
        t0 = time.perf_counter()
        page.get_by_text("Awaiting review").first.wait_for()
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length >= 48")
        out["page_reload_warm_s"] = time.perf_counter() - t0
        metric = page.get_by_test_id("stMain").get_by_test_id("stMetric").filter(has_text="Awaiting review").first
        value = metric.get_by_test_id("stMetricValue")
        per_click = []
        for _ in range(clicks):
            wait_idle(page)
            before = int(value.inner_text())
            button = (page.get_by_test_id("stMain").locator("button:enabled").filter(has_text="Accept")
                      .filter(has_not_text="all").filter(has_not_text="Accepted").first)
            t0 = time.perf_counter()
            button.click()
            expect(value).to_have_text(str(before - 1), timeout=60_000)
            per_click.append(time.perf_counter() - t0)
        out["click_to_update_s"] = statistics.median(per_click)
        out["click_to_update_max_s"] = max(per_click)
    return out


ROUND_STEPS = 300


def _round_once(s: LabelingSession, path: str) -> tuple[float, bool]:
    """One measured round through ``path`` (``cli`` or ``app``) with the previous round's UMAP job
    running; returns (seconds, whether a UMAP job was running when the round started)."""
    from labeltool.ui.figures import UMAP_JOBS, projection_path

    prev = s.current_round().round
    s.projection(start_umap=True)  # the previous round's UMAP, as the app leaves it after a round
    running = UMAP_JOBS.status(projection_path(s.project.cache_dir, f"round-{prev}", "umap")) == "running"
    train = TrainConfig(min_steps=ROUND_STEPS, max_steps=ROUND_STEPS, continued_steps=ROUND_STEPS)
    suggest = SuggestConfig(batch_size=48)
    t0 = time.perf_counter()
    if path == "cli":
        m = s.train_round(train)
        s.propose(suggest)
    else:
        m = s.run_app_round(train, suggest, start_umap=True).metrics
    dt = time.perf_counter() - t0
    if m["steps"] != ROUND_STEPS:
        raise RuntimeError(f"expected {ROUND_STEPS} steps, the round ran {m['steps']}")
    return dt, running


def round_side(repeats: int) -> dict[str, Any]:
    """Alternate CLI and app rounds on a copy of sample_data/ (see the module docstring)."""
    import shutil

    from labeltool.config import ProjectConfig
    from labeltool.ui.figures import UMAP_JOBS

    out: dict[str, Any] = {"cli_s": [], "app_s": [], "umap_running_at_start": {"cli": [], "app": []}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sample_data"
        shutil.copytree(REPO / "sample_data", folder, ignore=shutil.ignore_patterns(".labeltool"))
        with LabelingSession.open(folder, config=ProjectConfig(image_size=64)) as s:
            s.embed()
            s.train_round(TrainConfig(min_steps=ROUND_STEPS, max_steps=ROUND_STEPS, continued_steps=ROUND_STEPS))  # round 1: warm-up
            s.propose(SuggestConfig(batch_size=48))
            for n in range(repeats):
                for path in (("cli", "app") if n % 2 == 0 else ("app", "cli")):
                    dt, running = _round_once(s, path)
                    out[f"{path}_s"].append(round(dt, 3))
                    out["umap_running_at_start"][path].append(running)
                    print(f"round {n + 1}/{repeats} {path}: {dt:.2f} s (UMAP job running: {running})", flush=True)
            UMAP_JOBS.cancel_all()
    for path in ("cli", "app"):
        xs = out[f"{path}_s"]
        out[path] = {"min_s": min(xs), "median_s": statistics.median(xs), "max_s": max(xs)}
    out["ratio_app_over_cli_median"] = round(out["app"]["median_s"] / out["cli"]["median_s"], 3)
    return out


def main_round(repeats: int, out_path: Path) -> None:
    result = {"steps": ROUND_STEPS, "image_size": 64, "repeats": repeats, **round_side(repeats),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "load_average_1m_at_end": round(os.getloadavg()[0], 2)}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'path':6s} {'min s':>8s} {'median s':>9s} {'max s':>8s}")
    for path in ("cli", "app"):
        r = result[path]
        print(f"{path:6s} {r['min_s']:8.2f} {r['median_s']:9.2f} {r['max_s']:8.2f}")
    print(f"app / cli (medians): {result['ratio_app_over_cli_median']:.2f}")
    print(f"wrote {out_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round", action="store_true", help="a round in the app against the CLI's (see above)")
    ap.add_argument("--repeats", type=int, default=5, help="--round: rounds of each path")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--large", action="store_true",
                    help="make the project fast (hard links, rows and synthetic features written directly; "
                         "benchmarks/_app_project.py): for 100k-1M images")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--workdir", type=Path, help="keep the generated project here (default: a temp dir)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "app_render.json")
    args = ap.parse_args()
    if args.round:
        main_round(args.repeats, REPO / "benchmarks" / "results" / "app_round.json")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.workdir or Path(tmp)) / f"app-bench-{args.images}"
        make = build_large if args.large else build
        setup = make(root, args.images) if not (root / ".labeltool").exists() else {"reused": 1.0}
        server = server_side(root, args.clicks)
        print("server side (AppTest):", json.dumps(server), flush=True)
        browser = {"skipped": "--no-browser"} if args.no_browser else browser_side(root, args.clicks)
    import streamlit

    result = {
        "images": args.images, "page_size": 48, "clicks": args.clicks, "setup": setup,
        "server_apptest": server, "browser": browser,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "streamlit": streamlit.__version__,
                    "platform": platform.platform(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'measurement':38s} seconds")
    for group in ("setup", "server_apptest", "browser"):
        for k, v in result[group].items():
            print(f"{group + '.' + k:38s} {v:.3f}" if isinstance(v, float) else f"{group + '.' + k:38s} {v}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
