"""Take the screenshots of the app in docs/screenshots/ with headless Chromium.

    .venv/bin/python docs/take_screenshots.py [--image-size 224] [--out docs/screenshots]

Copies sample_data/ to a temporary folder, runs three rounds there with a reviewer that answers
from the sample's ground truth (so the charts have a history), computes the UMAP, then opens the
app and photographs each tab (the Review tab after one reject, and the evidence dialog). Needs chromium and playwright (.ci/browser_setup.sh). The server
is started closed, with the options of .streamlit/config.toml as flags (loopback only, no usage
statistics, no outside calls, no file watcher): see ``server_command`` in tests/app/browser_util.py.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))

from browser_util import browser_page, running_app, wait_idle, wait_plots  # noqa: E402

from labeltool.config import ProjectConfig, SuggestConfig, TrainConfig  # noqa: E402
from labeltool.session import LabelingSession  # noqa: E402
from labeltool.ui.figures import UMAP_JOBS, projection_path  # noqa: E402


def prepare(folder: Path, image_size: int, rounds: int) -> None:
    """Embed, then run rounds answered from ground truth; leave the last batch unreviewed."""
    truth = {row["path"]: row["label"] for row in csv.DictReader(open(folder / "unlabeled_labels.csv"))}
    with LabelingSession.open(folder, config=ProjectConfig(image_size=image_size)) as s:
        s.embed()
        rows = s.image_rows()
        for r in range(rounds):
            s.train_round(TrainConfig(epochs=30))
            batch = s.propose(SuggestConfig(batch_size=48))
            if r == rounds - 1:
                break
            classes = s.classes
            if r == rounds - 2:  # a few slips of the hand, for the Dataset page to find
                for x in batch[:3]:
                    s.assign(x.image_id, classes[(x.class_id + 3) % len(classes)])
                batch = batch[3:]
            good = [x for x in batch if truth.get(rows[x.image_id].relpath) == classes[x.class_id]]
            s.accept(good)
            for x in batch:
                t = truth.get(rows[x.image_id].relpath)
                if x not in good and t in classes:
                    s.reject(x.image_id, x.class_id, classes.index(t))
        proj = s.projection(start_umap=True)
        cur = s.current_round()
        UMAP_JOBS.wait(projection_path(s.project.cache_dir, f"round-{cur.round}", "umap"))
        print("projection:", s.projection(start_umap=False).method, proj.note)


def shoot(folder: Path, out: Path, image_size: int, export_to: Path, log: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with running_app(folder, image_size=image_size, extra=(), log=log) as url, \
            browser_page(1500, 1100) as page:
        page.goto(url)
        page.get_by_text("Awaiting review").first.wait_for()
        wait_idle(page)
        main = page.get_by_test_id("stMain")
        main.get_by_role("button", name="Reject", exact=True).nth(6).click()  # a reject: message, Undo, card kept
        page.get_by_text("Rejected", exact=False).first.wait_for()
        wait_idle(page)
        page.wait_for_timeout(1500)  # a busy machine may start the rerun late: wait for it to end again
        wait_idle(page)
        page.evaluate("() => document.querySelectorAll('*').forEach(e => { e.scrollTop = 0 })")
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "review.png"))
        main.get_by_role("button", name="Evidence", exact=True).first.click()  # the evidence, over the page
        page.get_by_role("dialog").wait_for()
        wait_idle(page)
        page.screenshot(path=str(out / "evidence.png"))
        page.keyboard.press("Escape")
        wait_idle(page)
        for name in ("Train", "Explore", "Dataset", "Export"):
            page.get_by_role("tab", name=name).click()
            wait_idle(page)
            if name == "Dataset":  # neighbours in the backbone features, which never saw the slips
                page.get_by_test_id("stMain").get_by_text("backbone", exact=True).click()
                wait_idle(page)
            if name == "Export":
                box = page.get_by_role("textbox", name="Export folder")
                box.fill(str(export_to))
                box.press("Enter")
                wait_idle(page)
                page.get_by_role("button", name="Export", exact=True).click()
                page.get_by_text("Exported to").wait_for()
                wait_idle(page)
            wait_plots(page)
            page.screenshot(path=str(out / f"{name.lower()}.png"))
            print("saved", out / f"{name.lower()}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sample_data"
        shutil.copytree(REPO / "sample_data", folder, ignore=shutil.ignore_patterns(".labeltool"))
        prepare(folder, args.image_size, args.rounds)
        shoot(folder, args.out, args.image_size, Path(tmp) / "export", Path(tmp) / "streamlit.log")


if __name__ == "__main__":
    main()
