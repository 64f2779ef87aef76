"""Fine-tune mode of the self-training protocol: the backbone's last stages train with the head.

Every meta-iteration continues from the previous one's fine-tuned backbone, head and loss
(``labeltool.train.finetune.finetune`` on the image files, augmentation included) and then
re-extracts the features of every train and test image with the new backbone, as a
fine-tune round of the app does. Before the first meta-iteration a head is trained on the
starting backbone's cached features, so fine-tuning does not begin from a random head. The
all-labels reference fine-tunes the starting backbone again from scratch on every label.

``labeltool.train.finetune`` reads images from files, so the benchmark's uint8 arrays are written
once as PNGs under ``<cache>/images/`` (lossless: the pixels the features were extracted from).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _datasets import ImageSet
from _features import FeatureSet, extract, load_images, make_backbone
from _protocol import Fit
from PIL import Image

from labeltool.config import FinetuneConfig, TrainConfig
from labeltool.models.backbones import Backbone
from labeltool.models.extract import pick_device
from labeltool.rounds.step import FinetuneImages, PoolFeatures, RoundInputs, RoundState, step
from labeltool.train.head import embed_features


def image_files(images: np.ndarray, folder: Path) -> list[Path]:
    """``images`` uint8 ``[N, H, W(, 3)]`` as ``folder/NNNNNN.png`` (written once; reused when the
    folder is complete). Returns the N paths in row order."""
    paths = [folder / f"{i:06d}.png" for i in range(len(images))]
    done = folder / "complete"
    if done.is_file() and done.read_text().strip() == str(len(images)):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for im, path in zip(images, paths, strict=True):
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.png")
        Image.fromarray(np.asarray(im)).save(tmp, compress_level=1)
        tmp.replace(path)
    done.write_text(str(len(images)))
    return paths


class FinetuneLearner:
    """Fine-tune mode: backbone (last ``stages``), head and loss, continued every meta-iteration.

    ``task["finetune"]`` holds :class:`~labeltool.train.finetune.FinetuneConfig` fields (``steps`` is the
    number of fine-tuning steps per meta-iteration); ``task["finetune_all_steps"]`` the steps of
    the all-labels reference.
    """

    def __init__(self, task: dict[str, Any], fs: FeatureSet, cfg: TrainConfig) -> None:
        self.fs, self.cfg = fs, cfg
        self.ft = FinetuneConfig.from_mapping(task.get("finetune"))
        self.all_steps = int(task.get("finetune_all_steps") or self.ft.steps or 1000)
        self.device = pick_device(cfg.device)
        subset, cache = task.get("subset"), Path(task["cache_dir"])
        self.images: ImageSet = load_images(task["dataset"], cache, subset)  # the rows the features hold
        key = task["dataset"] + (f"-sub{subset}s0" if subset else "")
        self.paths = image_files(self.images.x_train, cache / "images" / key / "train")
        self.start = make_backbone(task["init"], task["image_size"])
        self.backbone: Backbone = self.start
        self.ids = np.arange(len(fs.train), dtype=np.int64)
        self.state: RoundState | None = None  # the last meta-iteration's head, loss and Adam moments

    def _fit(self, backbone: Backbone, prev: RoundState | None, labels: np.ndarray,
             ft: FinetuneConfig, head_cfg: TrainConfig) -> Fit:
        t = time.perf_counter()
        config = replace(head_cfg, mode="finetune", finetune=ft.to_json())
        start_from = "pretrained" if backbone is self.start else "previous"
        images = FinetuneImages(backbone, start_from, self.paths, self._features)
        res = step(RoundInputs(self.ids, self.fs.train, labels, self.fs.classes), config, prev, images=images,
                   with_metrics=False)
        t1 = time.perf_counter()
        assert res.backbone is not None
        test = extract(self.images.x_test, res.backbone, self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        facts: dict[str, Any] = {}
        if prev is None:  # a head was trained on the starting backbone's features first
            facts["head_warmup_s"] = round(res.facts["head_warmup_seconds"], 2)
        facts.update({
            "train_s": round(res.facts["finetune_seconds"], 2),
            "extract_s": round(res.facts["extract_seconds"] + time.perf_counter() - t1, 2),
            "ft_images_per_s": round(res.facts["images_per_second"], 1), "amp": res.facts["amp"],
            "peak_gpu_mb": res.facts["peak_gpu_memory_mb"],
        })
        emb_test = embed_features(res.state.head, test, device=str(self.device))
        facts["fit_s"] = round(time.perf_counter() - t, 2)
        return Fit(res, emb_test, facts)

    def _features(self, backbone: Backbone, which: str) -> PoolFeatures:
        """The train images' features under ``backbone`` (``which`` is always ``"tuned"`` here:
        a previous round is always continued, so its features are never needed again)."""
        return PoolFeatures(self.ids, extract(self.images.x_train, backbone, self.device))

    def fit(self, labels: np.ndarray, seed: int) -> Fit:
        fit = self._fit(self.backbone, self.state, labels, replace(self.ft, seed=seed, device=str(self.device)),
                        replace(self.cfg, seed=seed))
        self.state = fit.result.state
        assert fit.result.backbone is not None
        self.backbone = fit.result.backbone
        return fit

    def fit_all(self, labels: np.ndarray, steps: int, seed: int) -> Fit:
        ft = replace(self.ft, seed=seed, device=str(self.device), steps=self.all_steps)
        head_cfg = replace(self.cfg, seed=seed, max_steps=steps, min_steps=1)
        return self._fit(self.start, None, labels, ft, head_cfg)

    def config(self) -> dict[str, Any]:
        return {"mode": "finetune", "train": self.cfg.to_json(),
                "finetune": {**self.ft.to_json(), "device": str(self.device)}, "finetune_all_steps": self.all_steps}
