"""``labeltool`` command line: a thin layer over :class:`labeltool.session.LabelingSession`."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labeltool.config import (
    BALANCE_MODES,
    EXTRACT_RUNTIME,
    NEW_PROJECT_MODE,
    REVIEWERS,
    TRAIN_MODES,
    FinetuneConfig,
    ProjectConfig,
    SelftrainConfig,
    SuggestConfig,
    TrainConfig,
)
from labeltool.data.undo import command_line_actor
from labeltool.losses import get_loss_class, list_losses
from labeltool.models.backbones import from_scratch_backbones, list_backbones
from labeltool.models.runtimes import runtime_names
from labeltool.session import LabelingSession
from labeltool.suggest.knn_scores import KNN_CONFIDENCES
from labeltool.suggest.registry import list_sources
from labeltool.ui.console import progress_bar, stage_printer
from labeltool.ui.messages import low_precision_remedy
from labeltool.ui.settings import capped_min_steps, default_first


def _shown(name: object, keep_newlines: bool = False) -> str:
    """Text safe to print: control characters (terminal escapes, newlines in file names) are
    shown escaped; ``keep_newlines`` keeps the line breaks of multi-line messages."""
    text = str(name)
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else repr(c)[1:-1] for c in text)


def _open(args: argparse.Namespace, *, create: bool = False, scan: bool | None = None) -> LabelingSession:
    config = None
    relocate = bool(getattr(args, "relocate", False))
    if create and not relocate:
        config = ProjectConfig(backbone=args.backbone, image_size=args.image_size, checkpoint=args.checkpoint)
    session = LabelingSession.open(args.path, project_dir=args.project_dir, config=config, create=create, scan=scan,
                                   relocate=relocate)
    session.actor = command_line_actor()  # each command is a process: undo follows the user, not the process
    return session


def _parse_params(items: Sequence[str], loss: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    params = {p.name: p for p in get_loss_class(loss).hyperparams}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        if name not in params:
            raise ValueError(f"loss {loss!r} has no hyperparameter {name!r}; valid: {sorted(params)}")
        out[name] = params[name].validate(value)
    return out


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        loss=args.loss, loss_params=_parse_params(args.param, args.loss), embedding_dim=args.dim,
        epochs=args.epochs, max_steps=args.max_steps, min_steps=capped_min_steps(args.max_steps), lr=args.lr,
        seed=args.seed, device=args.device, mode=args.mode, backbone=args.network,
        finetune={"stages": args.stages, "steps": args.finetune_steps} if args.mode != "head" else None,
    )


def suggest_config(args: argparse.Namespace) -> SuggestConfig:
    return SuggestConfig(
        source=args.source, confidence=args.confidence, k=args.k,
        batch_size=None if args.percent is not None else args.batch, percent=args.percent,
        stratified=args.stratified, min_confidence=args.min_confidence, balance=args.balance,
        calibration_folds=args.calibration_folds,
    )


# ---------------------------------------------------------------------------- commands
def cmd_init(args: argparse.Namespace) -> int:
    with _open(args, create=True, scan=False) as s:
        summary = s.scan(progress_bar("scan"))
        print(f"project: {s.project.dir}")
        print(f"images: {summary.total} ({summary.ok} usable, {len(summary.errors)} broken); "
              f"classes: {len(summary.classes)} {summary.classes}")
        for rel, why in summary.errors[:20]:
            print(f"  skipped {_shown(rel)}: {_shown(why)}")
        if len(summary.errors) > 20:
            print(f"  ... and {len(summary.errors) - 20} more (see 'labeltool status')")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    if args.job:
        return _embed_job(args)
    with _open(args) as s:
        res = s.embed(progress_bar("embed"), device=args.device, num_workers=args.workers, runtime=args.runtime,
                      limit=args.first, on_stage=stage_printer(_shown))
        on = res.device if res.runtime == "torch" else f"{res.device} ({res.runtime})"
        print(f"embedded {res.computed} new image(s) on {on}; cached: {len(s.feature_cache())}")
        if args.background and s.missing_features():
            print(s.start_embed_job(runtime=args.runtime).line())
        for path, why in res.failed.items():
            print(f"  failed {_shown(path)}: {_shown(why)}")
        for note in res.notes:
            print(f"  note: {note}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    with _open(args) as s:
        m = s.train_round(train_config(args), progress_bar("train"), continue_training=not args.fresh,
                          on_stage=stage_printer(_shown))
        print(json.dumps({k: v for k, v in m.items() if k != "review"}, indent=2, default=str))
        if args.mode == "auto" and (choice := s.training_choice()) is not None:
            print(f"# auto: {choice.reason}", file=sys.stderr)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    with _open(args) as s:
        rows = s.propose(suggest_config(args))
        images = {r.id: r.relpath for r in s.store.images()}
        classes = s.classes
        writer = csv.writer(sys.stdout)
        writer.writerow(["rank", "image_id", "path", "class", "confidence", "p_right", "source"])
        for r, c in zip(rows, s.calibrated(rows), strict=True):
            writer.writerow([r.rank, r.image_id, images[r.image_id], classes[r.class_id], f"{r.confidence:.4f}",
                             f"{c.confidence:.4f}", r.source])
        print(f"# {len(rows)} suggestion(s) for round {s.current_round().round}; {_precision(s.batch_estimate(rows))}",
              file=sys.stderr)
        _trust_notes(s, s.batch_estimate(rows), s.store.last_finished_round())
    return 0


def _precision(est: Any) -> str:
    """``estimated precision 0.93 [0.88, 0.96]`` (no interval when uncalibrated)."""
    if est.size == 0:
        return "nothing to estimate"
    if math.isnan(est.low):
        return f"estimated precision {est.value:.2f} (uncalibrated: {est.basis})"
    return f"estimated precision {est.value:.2f} [{est.low:.2f}, {est.high:.2f}]"


def _trust_notes(s: Any, est: Any, last: Any) -> None:
    """Warnings a user should read before accepting a batch unreviewed (on stderr)."""
    proposal = (last.metrics or {}).get("proposal", {}) if last is not None else {}
    warn = SuggestConfig().warn_below
    if est.size and not math.isnan(est.value) and est.value < warn:
        end_to_end = last is not None and last.trained_end_to_end
        print(f"# warning: the batch's estimated precision {est.value:.2f} is below {warn:.2f}; accepting it unreviewed "
              f"would add wrong labels. {low_precision_remedy(end_to_end, command_line=True)}", file=sys.stderr)
    for flag in proposal.get("balance_flags", []):
        print(f"# warning: {flag}", file=sys.stderr)


def cmd_review(args: argparse.Namespace) -> int:
    with _open(args) as s:
        if args.accept_top is not None:
            pending = s.pending_suggestions()[: args.accept_top]
            est = s.batch_estimate(pending)
            s.accept(pending)
            print(f"accepted {len(pending)} suggestion(s); {_precision(est)}")
        elif args.decisions:
            rows = s.decisions_from_file(Path(args.decisions))
            s.record(rows)
            print(f"recorded {len(rows)} decision(s) from {args.decisions}")
        elif args.undo:
            undone = s.undo()
            print(f"undid {len(undone)} decision(s)" if undone else "nothing to undo")
    return 0


def _embed_job(args: argparse.Namespace) -> int:
    """The background job's own process: embed what is missing, reporting to cache/embed_job.json."""
    with _open(args, scan=False) as s:
        res = s.run_embed_job(device=args.device, num_workers=args.workers, runtime=args.runtime)
        print(f"embedded {res.computed} image(s) ({res.runtime}); {len(res.failed)} failed")
    return 0


def cmd_selftrain(args: argparse.Namespace) -> int:
    from labeltool.rounds.selftrain import read_oracle, run_selftrain

    oracle = read_oracle(args.oracle) if args.oracle else None
    with _open(args) as s:
        if s.stats()["embedded"] < s.stats()["usable"]:
            s.embed(progress_bar("embed"), device=args.device, on_stage=stage_printer(_shown))
        print("round proposed accepted corrected precision labeled label_acc loo_1nn seconds")

        def show(r: Any) -> None:
            f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            print(f"{r.round:5d} {r.proposed:8d} {r.accepted:8d} {r.corrected:9d} {f(r.precision):>9} "
                  f"{r.labeled:7d} {f(r.label_accuracy):>9} {f(r.loo_1nn_accuracy):>7} {r.round_seconds:7.2f}")

        run_selftrain(s, args.rounds, train_config(args), suggest_config(args), oracle=oracle,
                      reviewer=args.reviewer, on_round=show, on_stage=stage_printer(_shown))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args) as s:
        st = s.stats()
        if args.json:
            print(json.dumps(st, indent=2, default=str))
            return 0
        print(f"folder:   {st['image_root']}\nproject:  {st['project_dir']}")
        print(f"images:   {st['images']} ({st['usable']} usable, {len(st['broken'])} broken, {st['embedded']} embedded)")
        if (job := s.embed_job()) is not None and not job.finished:
            print(f"          {job.line()}")
        print(f"labeled:  {st['labeled']} {st['by_source']}; unlabeled: {st['unlabeled']}")
        print(f"backbone: {st['backbone']} @ {st['input_size']} px; device: {st['device']}; rounds: {st['rounds']}")
        for c, n in st["per_class"].items():
            print(f"  {_shown(c):30s} {n}")
        print(s.training_line())
        cov = s.coverage()
        print(cov.line() if cov is not None else
              "estimated accuracy of the remainder: unknown (no suggestions yet: run train, then suggest)")
        for rel, why in st["broken"]:
            print(f"  broken: {_shown(rel)}: {_shown(why)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as s:
        out = args.out
        if out is None:
            if not args.model_only:
                raise ValueError("give an output folder (OUT), or --model-only to export the model under models/")
            out = Path("models") / f"{s.project.image_root.name}-round{s.checkpoint().round}"
        path = s.export(out, dataset=not args.model_only, model=not args.dataset_only, link=args.link,
                        overwrite=args.overwrite, include_pseudo=not args.no_pseudo)
        print(f"exported to {path}")
    return 0


# ---------------------------------------------------------------------------- parser
TRAIN, SUGGEST, PROJECT, FINETUNE = TrainConfig(), SuggestConfig(), ProjectConfig(), FinetuneConfig()


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("path", help="the image folder")
    sp.add_argument("--project-dir", help="where the project lives (default PATH/.labeltool)")


def _training(sp: argparse.ArgumentParser) -> None:
    """Options of a training round; defaults from TrainConfig and FinetuneConfig."""
    sp.add_argument("--loss", default=TRAIN.loss, choices=list_losses())
    sp.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="loss hyperparameter")
    sp.add_argument("--dim", type=int, default=TRAIN.embedding_dim, help="embedding dimension (default max(C-1, 64))")
    sp.add_argument("--epochs", type=int, default=TRAIN.epochs)
    sp.add_argument("--max-steps", type=int, default=TRAIN.max_steps, help="steps per round at most (end-to-end rounds too, unless --finetune-steps sets theirs)")
    sp.add_argument("--lr", type=float, default=TRAIN.lr)
    sp.add_argument("--seed", type=int, default=TRAIN.seed)
    sp.add_argument("--device", default=TRAIN.device)
    sp.add_argument("--mode", default=NEW_PROJECT_MODE, choices=default_first(TRAIN_MODES, NEW_PROJECT_MODE),
                    help="auto: pick head or end-to-end training (and the network) by held-out accuracy; "
                         "head: train a head on cached features; finetune: also train the backbone on images")
    sp.add_argument("--network", default=None, choices=from_scratch_backbones(),
                    help="finetune/auto: train this small network from scratch instead of the project's backbone")
    sp.add_argument("--stages", default=str(FINETUNE.stages),
                    help="finetune mode: backbone stages to train (a number, or 0/all)")
    sp.add_argument("--finetune-steps", type=int, default=FINETUNE.steps,
                    help="finetune/auto: steps of end-to-end training per round (default: from --epochs)")


def _suggesting(sp: argparse.ArgumentParser) -> None:
    """Options of a suggestion batch; defaults from SuggestConfig, sources from their registry."""
    sp.add_argument("--source", default=SUGGEST.source, choices=list_sources())
    sp.add_argument("--confidence", default=SUGGEST.confidence, choices=default_first(KNN_CONFIDENCES, SUGGEST.confidence))
    sp.add_argument("--k", type=int, default=SUGGEST.k)
    sp.add_argument("--batch", type=int, default=SUGGEST.batch_size)
    sp.add_argument("--percent", type=float, default=SUGGEST.percent, help="propose this %% of the unlabeled pool")
    sp.add_argument("--stratified", action="store_true", help="equal quota per predicted class")
    sp.add_argument("--min-confidence", type=float, default=SUGGEST.min_confidence)
    sp.add_argument("--balance", default=SUGGEST.balance, choices=default_first(BALANCE_MODES, SUGGEST.balance),
                    help="prevalence: each class gets a share of the batch in proportion to its estimated share")
    sp.add_argument("--calibration-folds", type=int, default=SUGGEST.calibration_folds,
                    help="folds of verified labels the stated precision is checked on (0 = off)")


def _init_options(sp: argparse.ArgumentParser) -> None:
    """Options of a new project; defaults from ProjectConfig and the backbone registry."""
    sp.add_argument("--backbone", default=PROJECT.backbone, help=f"one of {list_backbones()} or timm:<arch>")
    sp.add_argument("--image-size", type=int, default=PROJECT.image_size)
    sp.add_argument("--checkpoint", default=PROJECT.checkpoint, help="local weights file for timm:<arch>")
    sp.add_argument("--relocate", action="store_true",
                    help="the image folder was moved or renamed to PATH: move the project (--project-dir) to it")


def _embed_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--device", default=TRAIN.device)
    sp.add_argument("--workers", type=int, default=None, help="image decoding processes")
    sp.add_argument("--runtime", default=EXTRACT_RUNTIME, choices=runtime_names(),
                    help="what runs the backbone: auto = OpenVINO or ONNX Runtime on a CPU, PyTorch on a GPU")
    sp.add_argument("--first", type=int, default=None, metavar="N",
                    help="embed only N images now: the labeled ones first, then a representative sample")
    sp.add_argument("--background", action="store_true",
                    help="after that, embed the rest in a background process (see `labeltool status`)")
    sp.add_argument("--job", action="store_true", help=argparse.SUPPRESS)  # the background process itself


def _train_options(sp: argparse.ArgumentParser) -> None:
    _training(sp)
    sp.add_argument("--fresh", action="store_true", help="start from a new head instead of the last round's")


def _review_options(sp: argparse.ArgumentParser) -> None:
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--accept-top", type=int, help="accept the N most confident pending suggestions")
    g.add_argument("--decisions", help="CSV with columns path,action,label[,correct]")
    g.add_argument("--undo", action="store_true", help="undo the last batch of decisions")


def _selftrain_options(sp: argparse.ArgumentParser) -> None:
    _training(sp)
    _suggesting(sp)
    sp.add_argument("--rounds", type=int, default=SelftrainConfig.rounds)
    sp.add_argument("--oracle", help="CSV path,label of ground truth (simulated reviewer)")
    sp.add_argument("--reviewer", default=SelftrainConfig.reviewer, choices=list(REVIEWERS))


def _status_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true")


def _export_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("out", nargs="?", default=None, help="output folder (default for --model-only: models/...)")
    sp.add_argument("--model-only", action="store_true")
    sp.add_argument("--dataset-only", action="store_true")
    sp.add_argument("--link", action="store_true", help="hard-link images instead of copying")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--no-pseudo", action="store_true", help="leave out labels accepted without review")


# name, help, options, handler: one row per command, in the order --help lists them
COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]], ...] = (
    ("init", "scan the folder and create the project", _init_options, cmd_init),
    ("embed", "compute and cache backbone features", _embed_options, cmd_embed),
    ("train", "train a round on the labeled images", _train_options, cmd_train),
    ("suggest", "propose labels for unlabeled images (CSV on stdout)", _suggesting, cmd_suggest),
    ("review", "record decisions", _review_options, cmd_review),
    ("selftrain", "headless rounds with a simulated reviewer", _selftrain_options, cmd_selftrain),
    ("status", "project summary", _status_options, cmd_status),
    ("export", "export dataset and model", _export_options, cmd_export),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labeltool",
        description="Label an image folder semi-supervised, headless: embed, train, suggest, review, export.",
        epilog="Every command takes the image folder first; `labeltool COMMAND --help` lists its options.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_, options, handler in COMMANDS:
        sp = sub.add_parser(name, help=help_)
        _common(sp)
        options(sp)
        sp.set_defaults(func=handler)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, RuntimeError, OSError, ImportError, sqlite3.Error) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"labeltool {args.command}: error: {_shown(msg, keep_newlines=True)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
