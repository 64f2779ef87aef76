"""Time to the first suggestions on a large new folder, what the background job does meanwhile,
and that a killed job resumes.

    python benchmarks/bench_first_suggestions.py --images 50000
    python benchmarks/bench_first_suggestions.py --images 5000 --image-size 64 --job-seconds 30

The folder: ``--images`` Fashion-MNIST training images (28 px PNGs, hard-linked from the
benchmark cache), ``--per-class`` of them sorted into class folders as the seed, the rest in
``unlabeled/``. What a new user's app does is timed stage by stage: create the project (scan),
``embed_first`` (the labeled images and ``FIRST_EMBED_SAMPLE`` others, in the foreground), the
first head-mode round on what is embedded and its proposal: the first suggestions. The background
job that ``embed_first`` started is then watched for ``--job-seconds`` (its images/s), killed,
and restarted, to check it resumes where it stopped (its cache keeps its batches). The peer is
PyTorch eager on the same images in the same run (``--peer-images`` images through
``extract_to_cache`` with runtime ``torch``), to say what embedding the whole folder before the
first round would have cost. ``--no-pause`` runs the round without holding the background job
(:func:`labeltool.io.embed_job.foreground` replaced by a no-op): the round as it ran before the
job waited for it.

Writes benchmarks/results/first_suggestions.json (or ``--name``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import default_cache_dir, environment, write_json  # noqa: E402
from _datasets import balanced_seed, stratified_subset  # noqa: E402
from _features import load_images  # noqa: E402
from _protocol_finetune import image_files  # noqa: E402

from labeltool.config import FIRST_EMBED_SAMPLE, ProjectConfig, SuggestConfig, TrainConfig  # noqa: E402
from labeltool.data.features import FeatureCache  # noqa: E402
from labeltool.models.extract import extract_to_cache, pick_device  # noqa: E402
from labeltool.session import LabelingSession  # noqa: E402


def make_folder(root: Path, n: int, per_class: int, seed: int) -> Path:
    """``n`` Fashion-MNIST images: ``per_class`` per class in class folders, the rest unlabeled."""
    cache = default_cache_dir()
    ds = load_images("fashion_mnist", cache)
    paths = image_files(ds.x_train, cache / "images" / "fashion_mnist" / "train")
    rows = stratified_subset(ds.y_train, n, seed)
    seeds = set(balanced_seed(ds.y_train, per_class, seed, among=rows).tolist())
    for r in rows:
        folder = root / (f"class_{int(ds.y_train[r])}" if int(r) in seeds else "unlabeled")
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / paths[int(r)].name
        try:
            os.link(paths[int(r)], dest)
        except OSError:
            shutil.copyfile(paths[int(r)], dest)
    return root


def wait_for(cond, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.5)
    return False


def running(s: LabelingSession) -> bool:
    job = s.embed_job()
    return job is not None and job.running


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=None, help="backbone input px (default: its native 224)")
    ap.add_argument("--job-seconds", type=float, default=60.0)
    ap.add_argument("--peer-images", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="first_suggestions")
    ap.add_argument("--no-pause", action="store_true", help="the background job keeps running during the round")
    args = ap.parse_args()
    if args.no_pause:
        import contextlib

        import labeltool.session.training_rounds as rounds_mod

        rounds_mod.foreground = lambda cache_dir: contextlib.nullcontext(False)  # type: ignore[assignment]
    info = environment("cpu")
    out: dict[str, object] = {"images": args.images, "per_class": args.per_class, "first_sample": FIRST_EMBED_SAMPLE,
                              "job_waits_for_round": not args.no_pause}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "folder", args.images, args.per_class, args.seed)
        t0 = time.perf_counter()
        with LabelingSession.open(root, config=ProjectConfig(image_size=args.image_size), create=True) as s:
            out["scan_s"] = round(time.perf_counter() - t0, 1)
            t = time.perf_counter()
            first = s.embed_first()
            out.update(embed_first_s=round(time.perf_counter() - t, 1), embedded_first=first.computed,
                       runtime=first.runtime)
            t = time.perf_counter()
            s.train_round(TrainConfig(mode="head"))
            batch = s.propose(SuggestConfig(batch_size=100))
            out.update(first_round_s=round(time.perf_counter() - t, 1), suggestions=len(batch),
                       pool_at_first_round=int(len(s.pool().ids)))
            out["to_first_suggestions_s"] = round(time.perf_counter() - t0, 1)
            job = s.embed_job()
            assert job is not None, "embed_first started no background job"
            at = job.done
            time.sleep(max(0.0, args.job_seconds - (time.time() - job.started)))
            job = s.embed_job()
            assert job is not None
            out.update(job_images=job.done, job_seconds=round(job.updated - job.started, 1),
                       job_img_s=round(job.rate or 0.0, 1), job_done_at_first_suggestions=at,
                       job_total=job.total)
            os.kill(job.pid, signal.SIGKILL)
            wait_for(lambda: not running(s), 10)
            cache = s.feature_cache()
            cache.refresh()
            before = len(cache)
            s.start_embed_job()
            wait_for(lambda: (j := s.embed_job()) is not None and j.total > 0, 120)
            again = s.embed_job()
            out.update(cached_when_killed=before, resumed_total=again.total if again else None,
                       resumed_skips_cached=bool(again and again.total == args.images - before))
            s.stop_embed_job()
            peer = FeatureCache(Path(tmp) / "peer", "peer", s.backbone().spec.feature_dim)
            items = [(r.sha256 or "", s.project.image_path(r.relpath)) for r in s.store.images()[: args.peer_images]]
            t = time.perf_counter()
            extract_to_cache(s.backbone(), peer, items, device=pick_device("cpu"), runtime="torch")
            torch_rate = len(items) / (time.perf_counter() - t)
            out.update(peer_torch_img_s=round(torch_rate, 1),
                       peer_whole_folder_first_s=round(args.images / torch_rate + float(out["scan_s"]), 1))  # type: ignore[arg-type]
    for k, v in out.items():
        print(f"{k:32s} {v}")
    print(f"wrote {write_json(args.name, {**info, **out})}")


if __name__ == "__main__":
    main()
