"""Fine-tune mode: per-backbone defaults, stage freezing, frozen BatchNorm, learning, unlabeled batches, the session round
end to end (cache, checkpoint, reopen, export), the CLI flags, and the CUDA autocast paths."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from labeltool import load_model
from labeltool.cli import build_parser, main, train_config
from labeltool.config import SCRATCH_STEPS, ProjectConfig, SuggestConfig, TrainConfig
from labeltool.losses import create_loss, list_losses
from labeltool.losses.association import AssociationLoss
from labeltool.models.backbones import Backbone, create_backbone, get_spec
from labeltool.models.heads import ProjectionHead
from labeltool.session import LabelingSession
from labeltool.train.finetune import (
    FinetuneConfig,
    backbone_stages,
    finetune,
    lr_factor,
    set_train_mode,
    unfreeze_last_stages,
)

from sample_helpers import SAMPLE

SIZE = 32
CLASSES = ("bag", "coat", "sandal")  # sorted: class ids 0, 1, 2
FT = {"stages": 1, "steps": 2, "classes_per_batch": 3, "samples_per_class": 2, "unlabeled_batch": 4}
ROUND = TrainConfig(epochs=1, min_steps=10, mode="finetune", finetune=FT)


def _copy_tiny(dest: Path, per_class: int = 4, unlabeled: int = 10) -> Path:
    for c in CLASSES:
        (dest / c).mkdir(parents=True)
        for p in sorted((SAMPLE / c).glob("*.png"))[:per_class]:
            shutil.copy(p, dest / c / p.name)
    (dest / "unlabeled").mkdir()
    for p in sorted((SAMPLE / "unlabeled").glob("*.png"))[:unlabeled]:
        shutil.copy(p, dest / "unlabeled" / p.name)
    return dest


@pytest.fixture(scope="module")
def tiny_embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 4 seed images + 10 unlabeled, embedded at 32 px (do not modify)."""
    root = _copy_tiny(tmp_path_factory.mktemp("ft") / "tiny")
    with LabelingSession.open(root, config=ProjectConfig(image_size=SIZE)) as s:
        s.embed(num_workers=0)
    return root


@pytest.fixture
def tiny(tiny_embedded: Path, tmp_path: Path) -> Iterator[LabelingSession]:
    root = tmp_path / "tiny"
    shutil.copytree(tiny_embedded, root)
    with LabelingSession.open(root) as s:
        yield s


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return create_backbone("efficientnet_lite0", image_size=SIZE)


def _labeled(n: int = 4) -> list[tuple[Path, int]]:
    return [(p, c) for c, name in enumerate(CLASSES) for p in sorted((SAMPLE / name).glob("*.png"))[:n]]


def _head_loss(loss: str = "cross_entropy", dim: int = 16, seed: int = 0) -> tuple[ProjectionHead, torch.nn.Module]:
    torch.manual_seed(seed)
    return ProjectionHead(1280, dim, 64, 0.0), create_loss(loss, num_classes=len(CLASSES), embedding_dim=dim)


# ---------------------------------------------------------------------------- config and stages
def test_config_is_validated_and_json_round_trips() -> None:
    with pytest.raises(ValueError, match="unknown training mode"):
        TrainConfig(mode="bogus")
    with pytest.raises(ValueError, match="unknown fine-tune setting"):
        TrainConfig(mode="finetune", finetune={"stagez": 1})
    with pytest.raises(ValueError, match="amp"):
        FinetuneConfig(amp="fp8")
    with pytest.raises(ValueError, match="consistency_threshold"):
        FinetuneConfig(consistency=1.0, consistency_threshold=0.0)
    with pytest.raises(ValueError, match="consistency"):
        FinetuneConfig(consistency=-1.0)
    assert FinetuneConfig(stages="all").stages == 0 and FinetuneConfig(stages="3").stages == 3
    cfg = TrainConfig(mode="finetune", finetune={"stages": "all", "crop_scale": (0.5, 1.0)}, seed=7, device="cpu")
    assert cfg.finetune is not None and cfg.finetune["stages"] == 0 and cfg.finetune["epochs"] == 5
    again = TrainConfig(**json.loads(json.dumps(cfg.to_json())))
    assert again == cfg and TrainConfig().to_json()["mode"] == "head"
    ft = cfg.finetune_config()
    assert (ft.seed, ft.device, ft.crop_scale) == (7, "cpu", (0.5, 1.0))


def test_for_backbone_fills_in_from_scratch_defaults_and_keeps_user_settings() -> None:
    assoc, hoffer, pretrained = get_spec("assoc_mnist"), get_spec("hoffer_mnist"), get_spec("efficientnet_lite0")
    default = FinetuneConfig()
    scratch = default.for_backbone(assoc)
    assert (scratch.stages, scratch.backbone_lr, scratch.weight_decay) == (0, default.head_lr, 1e-3)
    assert default.for_backbone(hoffer).weight_decay == default.weight_decay  # no spec override
    assert default.for_backbone(pretrained) == default
    mine = FinetuneConfig(stages=1, backbone_lr=5e-4, head_lr=2e-3, weight_decay=0.0).for_backbone(assoc)
    assert (mine.stages, mine.backbone_lr, mine.head_lr, mine.weight_decay) == (1, 5e-4, 2e-3, 0.0)
    assert FinetuneConfig(head_lr=2e-3).for_backbone(hoffer).backbone_lr == 2e-3  # the head's lr, as set
    assert scratch.steps == SCRATCH_STEPS and default.for_backbone(pretrained).steps is None
    assert FinetuneConfig(steps=7).for_backbone(hoffer).steps == 7
    assert FinetuneConfig(epochs=9).for_backbone(hoffer).steps is None  # epochs set: they decide


def test_max_steps_bounds_an_end_to_end_round_unless_its_steps_are_set() -> None:
    hoffer = get_spec("hoffer_mnist")
    short = TrainConfig(mode="finetune", backbone="hoffer_mnist", max_steps=30).finetune_config()
    assert short.max_steps == 30 and short.for_backbone(hoffer).steps == 30  # not SCRATCH_STEPS
    assert TrainConfig(mode="finetune", backbone="hoffer_mnist").finetune_config().for_backbone(hoffer).steps \
        == min(SCRATCH_STEPS, TrainConfig().max_steps)
    mine = TrainConfig(mode="finetune", backbone="hoffer_mnist", max_steps=30, finetune={"steps": 50})
    assert mine.finetune_config().for_backbone(hoffer).steps == 50  # set by hand: not capped
    with pytest.raises(ValueError, match="max_steps"):
        FinetuneConfig(max_steps=0)


def test_max_steps_caps_the_steps_of_epochs(backbone: Backbone) -> None:
    head, loss = _head_loss()
    cfg = FinetuneConfig(stages=1, epochs=5, max_steps=2, classes_per_batch=3, samples_per_class=2,
                         device="cpu", num_workers=0)
    assert finetune(backbone, head, loss, _labeled(), [], cfg).steps == 2  # 5 epochs of 2 batches: 10


def test_a_from_scratch_backbone_trains_every_stage() -> None:
    scratch = create_backbone("hoffer_mnist")
    torch.manual_seed(0)
    head = ProjectionHead(128, 16, 32, 0.0)
    loss = create_loss("cross_entropy", num_classes=len(CLASSES), embedding_dim=16)
    res = finetune(scratch, head, loss, _labeled(), [], FinetuneConfig(steps=1, classes_per_batch=3,
                                                                        samples_per_class=2, device="cpu", num_workers=0))
    assert res.config is not None and res.config.stages == 0 and res.config.backbone_lr == res.config.head_lr
    assert res.trainable == [n for n, _ in scratch.named_parameters()]
    first = backbone_stages(scratch)[0][0]
    assert not torch.equal(dict(res.backbone.named_parameters())["body.stages.0.0.weight"],
                           next(first.parameters()))  # the input-side stage trained too
    assert res.images_per_second > 0 and res.data_seconds > 0


def test_lr_factor_of_each_schedule() -> None:
    assert [lr_factor("constant", s, 4) for s in range(4)] == [1.0] * 4
    cosine = [lr_factor("cosine", s, 4) for s in range(4)]
    assert cosine[0] == 1.0 and cosine[2] == pytest.approx(0.5) and 0 < cosine[3] < 0.2
    assert all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    assert lr_factor("cosine", 0, 1) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        FinetuneConfig(lr_schedule="linear")


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_each_step_trains_at_its_scheduled_learning_rate(schedule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[float]] = []
    step = torch.optim.AdamW.step

    def recording_step(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    torch.manual_seed(0)
    head = ProjectionHead(128, 16, 32, 0.0)
    loss = create_loss("cross_entropy", num_classes=len(CLASSES), embedding_dim=16)
    cfg = FinetuneConfig(steps=4, head_lr=2e-3, classes_per_batch=3, samples_per_class=2, device="cpu",
                         num_workers=0, lr_schedule=schedule)
    finetune(create_backbone("hoffer_mnist"), head, loss, _labeled(), [], cfg)
    assert len(seen) == 4
    for k, lrs in enumerate(seen):  # every group (backbone, head; decayed or not) follows the schedule
        assert lrs == pytest.approx([2e-3 * lr_factor(schedule, k, 4)] * len(lrs))


def test_cli_flags_reach_the_train_config() -> None:
    for cmd in ("train", "selftrain"):
        args = build_parser().parse_args([cmd, "x", "--mode", "finetune", "--stages", "2"])
        cfg = train_config(args)
        assert cfg.mode == "finetune" and cfg.finetune is not None and cfg.finetune["stages"] == 2
    default = train_config(build_parser().parse_args(["train", "x"]))
    assert default.mode == "auto" and default.backbone is None  # new projects: chosen by held-out accuracy
    picked = train_config(build_parser().parse_args(["train", "x", "--mode", "finetune", "--network", "hoffer_mnist",
                                                     "--finetune-steps", "7"]))
    assert picked.backbone == "hoffer_mnist" and picked.finetune is not None and picked.finetune["steps"] == 7


def test_stages_of_the_bundled_backbones(backbone: Backbone) -> None:
    stages = backbone_stages(backbone)
    assert len(stages) == 7  # EfficientNet-Lite0: 7 block stages, stem in the first, head conv in the last
    names = unfreeze_last_stages(backbone, 2)
    assert names and all(n.startswith(("body.model.blocks.5.", "body.model.blocks.6.", "body.model.conv_head.",
                                       "body.model.bn2.")) for n in names)
    assert any(n.startswith("body.model.conv_head.") for n in names)
    every = unfreeze_last_stages(backbone, "all")
    assert "body.model.conv_stem.weight" in every and not any("classifier" in n for n in every)
    assert unfreeze_last_stages(backbone, 0) == every
    with pytest.raises(ValueError, match="7 stages"):
        unfreeze_last_stages(backbone, 8)
    backbone.requires_grad_(False)
    mobile = create_backbone("mobilenet_v2", image_size=SIZE)
    assert [len(g) for g in backbone_stages(mobile)] == [2, 2, 3, 4, 3, 3, 2]


def test_frozen_batchnorm_stays_in_eval_mode(backbone: Backbone) -> None:
    import copy

    bb = copy.deepcopy(backbone)
    unfreeze_last_stages(bb, 1)
    set_train_mode(bb)
    m = bb.body.model
    assert not m.bn1.training and not m.blocks[0].training and m.blocks[6].training and m.bn2.training


# ---------------------------------------------------------------------------- training
def test_only_the_last_stages_change_and_frozen_bn_stats_stay(backbone: Backbone) -> None:
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head, loss = _head_loss()
    cfg = FinetuneConfig(stages=1, steps=2, classes_per_batch=3, samples_per_class=2, backbone_lr=1e-2,
                         device="cpu", num_workers=0)
    res = finetune(backbone, head, loss, _labeled(), [], cfg)
    after = res.backbone.state_dict()
    trained = ("body.model.blocks.6.", "body.model.conv_head.", "body.model.bn2.")
    assert set(res.trainable) and all(n.startswith(trained) for n in res.trainable)
    for k, v in after.items():
        if k.startswith(trained) and k.endswith((".weight", "running_mean")):
            assert not torch.equal(v, before[k]), f"{k} did not train"
        elif not k.startswith(trained):
            assert torch.equal(v, before[k]), f"{k} of a frozen stage changed"
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # input untouched
    assert res.device == "cpu" and res.amp == "off" and res.images == 12 and res.images_per_second > 0


def test_loss_decreases_on_a_toy_set(backbone: Backbone) -> None:
    head, loss = _head_loss()
    cfg = FinetuneConfig(stages=1, steps=6, classes_per_batch=3, samples_per_class=4, augment=False,
                         backbone_lr=1e-3, head_lr=3e-3, device="cpu", num_workers=0)
    res = finetune(backbone, head, loss, _labeled(), [], cfg)
    assert len(res.losses) == 6 and all(np.isfinite(res.losses))
    assert np.mean(res.losses[-2:]) < 0.7 * res.losses[0]


class _Recording(AssociationLoss):
    seen: list[int] = []

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _Recording.seen.append(int((labels < 0).sum()))
        return super().forward(embeddings, labels)


def test_semi_supervised_loss_gets_unlabeled_images(backbone: Backbone) -> None:
    unlabeled = sorted((SAMPLE / "unlabeled").glob("*.png"))[:10]
    _Recording.seen = []
    head, _ = _head_loss()
    loss = _Recording(num_classes=3, embedding_dim=16)
    cfg = FinetuneConfig(stages=1, steps=1, classes_per_batch=3, samples_per_class=2, unlabeled_batch=5,
                         device="cpu", num_workers=0)
    res = finetune(backbone, head, loss, _labeled(), unlabeled, cfg)
    assert _Recording.seen == [5] and res.images == 6 + 5
    ce_head, ce = _head_loss()
    assert finetune(backbone, ce_head, ce, _labeled(), unlabeled, cfg).images == 6  # supervised: none


# ---------------------------------------------------------------------------- session rounds
def test_finetune_round_end_to_end(tiny: LabelingSession, tmp_path: Path) -> None:
    m = tiny.train_round(ROUND)
    assert m["round"] == 1 and m["mode"] == "finetune" and m["device"] == "cpu" and m["images_per_second"] > 0
    assert m["backbone_from"] == "pretrained" and m["n_pool"] == 22 and m["stages"] == 1
    emb_dir = tiny.project.embeddings_dir
    key = f"{tiny.backbone_spec.cache_key()}-ft-round1"
    assert (emb_dir / f"{key}.f16").is_file() and m["feature_key"] == key
    assert (tiny.project.checkpoints_dir / "round-1.backbone.safetensors").is_file()
    cur = tiny.current_round()
    assert cur.checkpoint.finetuned and cur.embeddings.shape == (22, 64)
    base = tiny.pool().features
    pool = tiny.pool()
    ft_pool = tiny.features_under(cur.checkpoint.load_backbone(tiny.backbone()), key, pool)
    assert isinstance(ft_pool.features.matrix, np.memmap)
    assert not np.allclose(np.asarray(ft_pool.features), np.asarray(base))  # other features than the base cache

    rows = tiny.propose(SuggestConfig(batch_size=4))
    assert len(rows) == 4
    sample = [tiny.project.image_path(pool.relpaths[i]) for i in ft_pool.keep[:5]]
    names, probs = tiny.predict(sample)
    out = tiny.export(tmp_path / "out", dataset=False)
    pred = load_model(out).predict(sample)
    assert pred.classes == names
    np.testing.assert_allclose(pred.probabilities, probs, atol=1e-4)

    emb, root = cur.embeddings.copy(), tiny.project.image_root
    tiny.close()
    with LabelingSession.open(root) as again:
        np.testing.assert_array_equal(again.current_round().embeddings, emb)  # read back from the round's cache
        assert again.predict(sample)[0] == names
    for p in emb_dir.glob(f"{key}.*"):
        p.unlink()
    with LabelingSession.open(root) as again:
        np.testing.assert_allclose(again.current_round().embeddings, emb, atol=2e-2)  # recomputed
        assert (emb_dir / f"{key}.f16").is_file()
        m2 = again.train_round(ROUND)
        assert m2["backbone_from"] == "round-1" and m2["round"] == 2
        moments = again.checkpoint().load_optimizer_state()  # round 1's moments were resumed from disk
        assert moments and {float(v) for k, v in moments.items() if k.endswith(".step")} == {m["steps"] + m2["steps"]}
        assert any(k.startswith("backbone.") for k in moments)
        assert not (again.project.checkpoints_dir / "round-1.optimizer.safetensors").exists()
        m3 = again.train_round(TrainConfig(epochs=1, min_steps=5))  # head mode after a fine-tune round
        assert m3["round"] == 3 and not again.checkpoint().finetuned


def test_cli_train_finetune(tiny: LabelingSession, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tiny.project.image_root)
    tiny.close()
    assert main(["train", root, "--mode", "finetune", "--stages", "1", "--epochs", "1", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "finetune" and out["stages"] == 1 and out["steps"] == 5  # FinetuneConfig.epochs


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_finetune_with_every_loss_is_finite(backbone: Backbone, name: str) -> None:
    unlabeled = sorted((SAMPLE / "unlabeled").glob("*.png"))[:16]
    head, loss = _head_loss(name)
    cfg = FinetuneConfig(stages=2, steps=4, classes_per_batch=3, samples_per_class=4, unlabeled_batch=8,
                         amp="bf16", device="cuda", num_workers=2)
    res = finetune(backbone, head, loss, _labeled(), unlabeled, cfg)
    assert res.amp == "bf16" and res.device.startswith("cuda") and all(np.isfinite(res.losses))
    for module in (res.backbone, res.head, res.loss):
        assert all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize("name", ["cross_entropy", "arcface", "arcgrad"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_finetune_with_grad_scaler_is_finite(backbone: Backbone, name: str) -> None:
    head, loss = _head_loss(name)
    cfg = FinetuneConfig(stages="all", steps=6, classes_per_batch=3, samples_per_class=4, amp="fp16",
                         device="cuda", num_workers=2)
    res = finetune(backbone, head, loss, _labeled(), [], cfg)
    assert res.amp == "fp16" and all(np.isfinite(res.losses)) and res.peak_memory_mb is not None
    assert all(torch.isfinite(t).all() for t in res.backbone.state_dict().values() if t.is_floating_point())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_finetune_round_on_cuda(tiny: LabelingSession) -> None:
    m = tiny.train_round(TrainConfig(epochs=1, min_steps=5, mode="finetune", loss="arcgrad",
                                     finetune={**FT, "amp": "auto"}))
    assert m["device"].startswith("cuda") and m["amp"] in ("bf16", "fp16") and np.isfinite(m["final_loss"])
    assert np.isfinite(tiny.current_round().embeddings).all()
