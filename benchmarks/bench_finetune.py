"""Fine-tune throughput: images/s, seconds and peak GPU memory of fine-tune mode on a folder.

    python benchmarks/bench_finetune.py --device cuda --size 224 --epochs 2
    python benchmarks/bench_finetune.py --device cpu --size 64 --epochs 1 --losses cross_entropy

By default the bundled ``sample_data/`` with every image labeled from ``unlabeled_labels.csv``
(450 images, 10 classes), so an epoch has several P x K batches. A short warm-up run comes
first (CUDA context, cuDNN autotuning). Prints a table and writes
``benchmarks/results/finetune_<device>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeltool.config import FinetuneConfig  # noqa: E402
from labeltool.losses import create_loss  # noqa: E402
from labeltool.models.backbones import create_backbone  # noqa: E402
from labeltool.models.extract import pick_device  # noqa: E402
from labeltool.models.heads import ProjectionHead  # noqa: E402
from labeltool.train.finetune import finetune  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def labeled_images(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """Seed folders plus ``unlabeled_labels.csv`` (when present) as ``(path, class id)`` pairs."""
    pairs: list[tuple[Path, str]] = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "unlabeled"):
        pairs += [(p, d.name) for p in sorted(d.glob("*.png")) + sorted(d.glob("*.jpg"))]
    truth = folder / "unlabeled_labels.csv"
    if truth.exists():
        with open(truth, newline="") as fh:
            pairs += [(folder / r["path"], r["label"]) for r in csv.DictReader(fh)]
    classes = sorted({c for _, c in pairs})
    ids = {c: i for i, c in enumerate(classes)}
    return [(p, ids[c]) for p, c in pairs], classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folder", type=Path, default=REPO / "sample_data")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--losses", nargs="+", default=["cross_entropy", "arcgrad"])
    ap.add_argument("--k", nargs="+", type=int, default=[4], help="images per class in a batch (K)")
    ap.add_argument("--stages", default="2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    device = pick_device(args.device)
    labeled, classes = labeled_images(args.folder)
    backbone = create_backbone(args.backbone, image_size=args.size)
    dim = max(len(classes) - 1, 64)

    def run(loss_name: str, k: int, **over: object) -> dict[str, object]:
        torch.manual_seed(0)
        head = ProjectionHead(backbone.spec.feature_dim, dim)
        loss = create_loss(loss_name, num_classes=len(classes), embedding_dim=dim)
        cfg = FinetuneConfig(stages=args.stages, epochs=args.epochs, samples_per_class=k, amp=args.amp,
                             device=str(device), num_workers=args.workers, **over)  # type: ignore[arg-type]
        r = finetune(backbone, head, loss, labeled, [], cfg)
        return {
            "loss": loss_name, "k": k, "batch": min(cfg.classes_per_batch, len(classes)) * k, "steps": r.steps,
            "images": r.images, "seconds": round(r.seconds, 3), "images_per_s": round(r.images_per_second, 1),
            "peak_gpu_mb": None if r.peak_memory_mb is None else round(r.peak_memory_mb, 1), "amp": r.amp,
            "first_loss": round(r.losses[0], 4), "last_loss": round(r.losses[-1], 4),
        }

    run(args.losses[0], args.k[0], steps=3)  # warm-up, not reported
    rows = [run(name, k) for k in args.k for name in args.losses]
    print(f"fine-tune {args.backbone} @ {args.size}px, stages={args.stages}, {len(labeled)} labeled images, "
          f"{args.epochs} epochs, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    cols = list(rows[0])
    print(" ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" ".join(f"{str(r[c]):>13}" for c in cols))
    out = args.out or REPO / "benchmarks" / "results" / f"finetune_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "backbone": args.backbone, "size": args.size, "stages": args.stages, "epochs": args.epochs,
        "labeled": len(labeled), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
