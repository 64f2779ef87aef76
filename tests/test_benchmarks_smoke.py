"""Smoke runs of the benchmark scripts on tiny synthetic data (CPU, seconds): they start, write
their JSON and their numbers are coherent. The benchmarks themselves are run by hand."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def bench_path() -> Iterator[None]:
    """Lets a block import the benchmark modules, which import each other by bare name."""
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def run(script: str, tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out"), "LABELTOOL_BENCH_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_paper_protocol_smoke(tmp_path: Path) -> None:
    out = run("bench_paper_protocol.py", tmp_path, "--datasets", "synthetic", "--subset", "400", "--iterations", "2",
              "--seeds", "0", "--losses", "cross_entropy", "triplet", "--inits", "pretrained", "--max-steps", "20",
              "--all-steps", "20", "--device", "cpu", "--threads", "1")
    assert "cross_entropy" in out and "triplet" in out
    data = json.loads((tmp_path / "out" / "paper_protocol.json").read_text())
    assert {r["loss"] for r in data["summary"]} == {"cross_entropy", "triplet"}
    for r in data["runs"]:
        assert r["status"] == "done"
        its = r["iterations"]
        assert len(its) == 3 and its[0]["labeled"] < its[-1]["labeled"]
        assert 0.0 <= its[-1]["acc_1nn"] <= 1.0 and r["all_labels"] is not None
        # 10% of the remaining pool per meta-iteration
        assert its[1]["selected"] == int(np.ceil(0.1 * (400 - its[0]["labeled"])))
    assert data["command"].startswith("bench_paper_protocol.py") and "torch" in data


def test_paper_protocol_softmax_variant_smoke(tmp_path: Path) -> None:
    """Pseudo-labels picked by the classifier: run only for losses that have one."""
    run("bench_paper_protocol.py", tmp_path, "--datasets", "synthetic", "--subset", "300", "--iterations", "2",
        "--seeds", "0", "--losses", "cross_entropy", "triplet", "--variants", "softmax",
        "--variant-losses", "cross_entropy", "triplet", "--inits", "pretrained", "--max-steps", "20",
        "--all-steps", "0", "--device", "cpu", "--threads", "1")
    data = json.loads((tmp_path / "out" / "paper_protocol.json").read_text())
    (r,) = data["runs"]
    assert (r["task"]["loss"], r["task"]["variant"], r["status"]) == ("cross_entropy", "softmax", "done")
    assert r["suggest_config"]["source"] == "softmax" and r["suggest_config"]["stratified"]
    its = r["iterations"]
    assert its[1]["selected"] == int(np.ceil(0.1 * (300 - its[0]["labeled"])))
    assert 0.5 < its[1]["batch_precision"] <= 1.0


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])])
def test_paper_protocol_finetune_mode_smoke(tmp_path: Path, device: str) -> None:
    """Fine-tune mode: the backbone trains and the features are re-extracted every meta-iteration."""
    out = run("bench_paper_protocol.py", tmp_path, "--datasets", "synthetic_images", "--subset", "60",
              "--image-size", "32", "--iterations", "1", "--seeds", "0", "--losses", "cross_entropy",
              "--inits", "pretrained", "--modes", "head", "finetune", "--max-steps", "10", "--all-steps", "10",
              "--ft-steps", "2", "--ft-all-steps", "3", "--ft-workers", "0", "--device", device, "--threads", "1")
    assert "finetune" in out
    data = json.loads((tmp_path / "out" / "paper_protocol.json").read_text())
    assert sorted(r["mode"] for r in data["summary"]) == ["finetune", "head"]
    runs = {r["task"]["mode"]: r for r in data["runs"]}
    ft = runs["finetune"]
    assert ft["status"] == "done", ft["status"]
    assert ft["device"].startswith(device) and runs["head"]["device"].startswith(device)
    assert ft["train_config"]["mode"] == "finetune" and ft["train_config"]["finetune"]["steps"] == 2
    its = ft["iterations"]
    assert len(its) == 2 and its[0]["labeled"] < its[1]["labeled"]
    assert "head_warmup_s" in its[0] and "head_warmup_s" not in its[1]  # the head is continued, not rebuilt
    assert all(it["steps"] == 2 and it["extract_s"] > 0 and 0.0 <= it["acc_1nn"] <= 1.0 for it in its)
    assert ft["all_labels"]["steps"] == 3 and ft["all_labels"]["acc_clf"] is not None
    # the same seed labels and selection rule in both modes
    assert its[1]["selected"] == runs["head"]["iterations"][1]["selected"]
    pngs = sorted((tmp_path / "cache" / "images" / "synthetic_images-sub60s0" / "train").glob("*.png"))
    assert len(pngs) == 60


def test_compare_protocol_pairs_runs_by_task_and_seed() -> None:
    with bench_path():
        from report import compare_protocol

    def run_(seed: int, first: float, last: float, status: str = "done") -> dict[str, object]:
        task = {"dataset": "cifar10", "init": "pretrained", "loss": "triplet", "variant": "paper", "seed": seed}
        return {"task": task, "status": status, "has_classifier": False,
                "iterations": [{"acc_1nn": first}, {"acc_1nn": last}]}

    before = [run_(0, 0.70, 0.72), run_(1, 0.71, 0.72), run_(2, 0.70, 0.75)]
    after = [run_(0, 0.70, 0.73), run_(1, 0.71, 0.74), run_(2, 0.70, 0.10, "partial: 3 of 25"), run_(3, 0.7, 0.7)]
    (row,) = compare_protocol(before, after)  # seed 2 unfinished after, seed 3 missing before: both left out
    assert row[:7] == ["cifar10", "head", "pretrained", "triplet", "paper", 2, "1-NN"]
    assert row[7:] == ["72.00 ± 0.00", "73.50 ± 0.71", "+1.50 ± 0.71", "+1.50 ± 0.71", "+3.00 ± 0.00"]


def test_trace_rows_follow_finished_head_runs_of_one_seed() -> None:
    with bench_path():
        from report import trace_rows

    def run_(seed: int, loss: str, n: int = 26, status: str = "done", clf: bool = True) -> dict[str, object]:
        its = [{"acc_1nn": 0.5 + i / 100, "acc_clf": 0.6 + i / 100, "batch_precision": 1 - i / 50,
                "pseudo_precision": 0.8, "labeled": 100 * (i + 1)} for i in range(n)]
        task = {"init": "pretrained", "loss": loss, "variant": "paper", "seed": seed, "mode": "head"}
        return {"task": task, "status": status, "has_classifier": clf, "iterations": its}

    runs = [run_(0, "triplet", clf=False), run_(1, "arcface"), run_(0, "center", n=10, status="partial: 9 of 25"),
            run_(0, "arcface")]
    rows = trace_rows(runs)
    assert [r[0] for r in rows] == ["pretrained / arcface / paper", "pretrained / triplet / paper"]
    assert rows[0][1:7] == ["60.0", "65.0", "70.0", "75.0", "80.0", "85.0"]  # the classifier's accuracy
    assert rows[1][1] == "50.0" and rows[1][7:] == ["0.90 → 0.50", "80.0", "2,600"]  # 1-NN without one


def test_readme_blocks_are_rewritten_and_the_prose_around_them_is_kept(tmp_path: Path) -> None:
    with bench_path():
        from report import ReadmeError, fill_readme

    def result(name: str, value: float) -> None:
        (tmp_path / name).write_text(json.dumps({"device": "cpu", "cpu_count": 2, "started": "today", "command": "c",
                                                 "rows": [{"pool": 10, "precision": value}]}))

    result("vote_prior_a.json", 0.5)
    result("vote_prior_b.json", 0.75)
    text = ("# Title\n\nProse *before*, naming `<!-- report X -->` and `<!-- /report -->`.\n\n<!-- report vote_prior_a.json -->\nold table\n<!-- /report -->\n\n"
            "Prose between.\n<!-- report vote_prior_b.json -->\n<!-- /report -->\nProse after, no newline")
    new, changed = fill_readme(text, tmp_path)
    assert changed == ["vote_prior_a.json", "vote_prior_b.json"]
    outside = new.split("\n<!-- report ")
    assert outside[0] == "# Title\n\nProse *before*, naming `<!-- report X -->` and `<!-- /report -->`.\n"
    assert "-->\n\nProse between.\n" in new and new.endswith("<!-- /report -->\nProse after, no newline")
    assert "old table" not in new and "| 0.500 |" in new and "| 0.750 |" in new
    assert fill_readme(new, tmp_path) == (new, [])  # up to date: nothing to rewrite
    result("vote_prior_b.json", 0.9)
    again, changed = fill_readme(new, tmp_path)
    assert changed == ["vote_prior_b.json"] and "| 0.900 |" in again and "| 0.500 |" in again

    bad = {
        "<!-- report vote_prior_a.json -->\nno end\n": "line 1: .* has no '<!-- /report -->'",
        "x\n<!-- report vote_prior_a.json -->\n<!-- report vote_prior_b.json -->\n<!-- /report -->\n":
            "line 2: .* before the next block",
        "a\nb\n<!-- /report -->\n": "line 3: '<!-- /report -->' without an opening",
        "<!-- report missing.json -->\n<!-- /report -->\n": "line 1: .*missing.json, which does not exist",
        "<!-- report --compare vote_prior_a.json -->\n<!-- /report -->\n": "needs one file or --compare with two",
    }
    for readme, message in bad.items():
        with pytest.raises(ReadmeError, match=message):
            fill_readme(readme, tmp_path)


def test_benchmarks_readme_tables_match_the_committed_results() -> None:
    """The marked tables of benchmarks/README.md are what report.py makes of benchmarks/results."""
    with bench_path():
        from report import fill_readme
    readme = (BENCH / "README.md").read_text()
    assert readme.count("<!-- report ") >= 8
    _, changed = fill_readme(readme, BENCH / "results")
    assert changed == [], f"out of date; refresh with `python benchmarks/report.py --readme`: {changed}"


def test_merge_protocol_results(tmp_path: Path) -> None:
    with bench_path():
        from merge_results import merge

    def run_(seed: int, status: str, acc: float) -> dict[str, object]:
        it = {"acc_1nn": acc, "acc_clf": acc, "pseudo_precision": 0.8}
        task = {"dataset": "cifar10", "init": "pretrained", "loss": "cross_entropy", "variant": "paper", "seed": seed}
        return {"task": task, "status": status, "iterations": [it, it], "all_labels": it, "has_classifier": True,
                "seconds": 60.0, "device": "cpu"}

    first = {"command": "a", "device": "cpu", "runs": [run_(0, "done", 0.70), run_(1, "partial: 3 of 25", 0.10)],
             "unfinished": [{"task": run_(2, "", 0)["task"], "status": "not finished"}], "elapsed_s": 10}
    second = {"command": "b", "device": "cpu", "runs": [run_(1, "done", 0.72), run_(2, "done", 0.74)], "elapsed_s": 5}
    m = merge([first, second])
    assert m["commands"] == ["a", "b"] and m["seeds"] == [0, 1, 2] and m["unfinished"] == []
    assert sorted(r["status"] for r in m["runs"]) == ["done"] * 3  # the finished seed 1 replaced the partial one
    (row,) = m["summary"]
    assert row["seeds"] == 3 and row["labels_only"] == "72.00 ± 2.00"
    # a partial run never replaces a finished one, nor one that got further
    assert merge([second, {**first, "runs": first["runs"][1:]}])["runs"][0]["status"] == "done"
    longer = run_(1, "partial: 3 of 25", 0.10)
    longer["iterations"] = longer["iterations"] * 2  # type: ignore[operator]
    kept = merge([{**first, "runs": [longer]}, {**first, "runs": [run_(1, "partial: 1 of 25", 0.2)]}])["runs"]
    assert kept == [longer]
    with pytest.raises(ValueError, match="different devices"):
        merge([first, {**second, "device": "cuda"}])

    def cost(method: str, status: str) -> dict[str, object]:
        return {"task": {"dataset": "fashion_mnist", "method": method, "seed": 0, "walk_temperature": 0.1},
                "status": status}

    a = {"command": "a", "device": "cpu", "results": [cost("hand", "done"), cost("labeltool_knn", "done")],
         "unfinished": [cost("knn_frozen", "not finished")]}
    b = {"command": "b", "device": "cpu", "results": [cost("knn_frozen", "done")], "unfinished": []}
    m = merge([a, b])
    assert sorted(r["task"]["method"] for r in m["results"]) == ["hand", "knn_frozen", "labeltool_knn"]
    assert m["unfinished"] == [] and "summary" not in m
    with pytest.raises(ValueError, match="all be protocol results"):
        merge([a, first])


def test_human_cost_smoke(tmp_path: Path) -> None:
    run("bench_human_cost.py", tmp_path, "--datasets", "synthetic", "--subset", "400", "--pool", "300",
        "--batch-percent", "20", "--max-steps", "20", "--device", "cpu", "--threads", "1")
    data = json.loads((tmp_path / "out" / "human_cost.json").read_text())
    by_method = {r["task"]["method"]: r for r in data["results"]}
    assert set(by_method) == {"hand", "knn_frozen", "label_spreading", "labeltool_knn", "labeltool_walk",
                              "labeltool_knn+walk", "labeltool_softmax"}
    assert by_method["hand"]["corrections_per_image"] == 1.0
    for r in by_method.values():
        assert r["final_label_accuracy"] == 1.0  # the reviewer corrects every wrong suggestion
        assert r["reviews_per_image"] == pytest.approx(1.0)
        assert r["accepted"] + r["corrected"] + r["hand_labeled"] == r["to_label"]
    assert by_method["knn_frozen"]["curve"] and by_method["knn_frozen"]["corrections_per_image"] < 0.5


def test_human_cost_softmax_needs_a_classifier(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_OUT": str(tmp_path / "out"), "LABELTOOL_BENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_human_cost.py"), "--datasets", "synthetic",
                           "--methods", "labeltool_softmax", "--loss", "triplet"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2 and "triplet has none" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_speed_smoke(tmp_path: Path) -> None:
    out = run("bench_speed.py", tmp_path, "--parts", "knn", "round", "--knn-sizes", "500", "--round-sizes", "400",
              "--labeled", "100", "--dim", "32", "--threads", "1")
    assert "sklearn/labeltool" in out
    data = json.loads((tmp_path / "out" / "speed.json").read_text())
    knn = data["knn"][0]
    assert knn["same_1nn"] == 1.0 and knn["sklearn_method"] == "brute"
    assert knn["numpy_product_s"] >= 0 and knn["numpy_topk_s"] >= 0 and "numpy top-k s" in out
    rnd = data["round"][0]
    assert "error" not in rnd, rnd
    assert rnd["images"] == 400 and rnd["suggestions"] == 100 and rnd["peak_rss_mb"] > 0


def test_speed_round_variants_parse() -> None:
    with bench_path():
        from _speed_rounds import parse_variant

    assert parse_variant("f32:train_precision=float32,warm=1") == {
        "name": "f32", "train_precision": "float32", "warm": 1}
    with pytest.raises(SystemExit, match="unknown setting 'dtype'"):
        parse_variant("x:dtype=half")


def test_feature_extraction_matches_labeltool_preprocessing(tmp_path: Path) -> None:
    with bench_path():
        import torch
        from _datasets import synthetic_images
        from _features import batch_preprocess, make_backbone
        from PIL import Image

        from labeltool.models.backbones import make_preprocess

        imgs = synthetic_images(4, 1, px=20).x_train
        spec = make_backbone("pretrained", 32).spec
        batch = batch_preprocess(spec)(torch.from_numpy(imgs))
        single = torch.stack([make_preprocess(spec)(Image.fromarray(im)) for im in imgs])
        assert torch.equal(batch, single)
    run("bench_paper_protocol.py", tmp_path, "--datasets", "synthetic_images", "--subset", "60", "--image-size", "32",
        "--device", "cpu", "--extract-only", "--inits", "pretrained", "random")
    metas = sorted((tmp_path / "cache" / "features").glob("*/meta.json"))
    assert len(metas) == 2
    train = np.load(metas[0].parent / "train.npy")
    assert train.shape == (60, 1280) and np.isfinite(train.astype(np.float32)).all()


def test_vote_prior_smoke(tmp_path: Path) -> None:
    out = run("bench_vote_prior.py", tmp_path, "--datasets", "synthetic", "--threads", "1")
    rows = json.loads((tmp_path / "out" / "vote_prior.json").read_text())["rows"]
    assert [r["prior"] for r in rows] == [0.0, 1.0] and "prec@5%" in out
    plain, smoothed = rows
    # the same neighbour lists: the same predictions; the prior only breaks the ties at the top
    assert plain["accuracy"] == smoothed["accuracy"]
    assert smoothed["tied_at_top"] < plain["tied_at_top"]
    assert smoothed["mean_conf"] < plain["mean_conf"] <= 1.0


def test_budget_continued_smoke(tmp_path: Path) -> None:
    out = run("bench_budget.py", tmp_path, "--continued", "--datasets", "synthetic", "--losses", "cross_entropy",
              "--labels", "100", "--steps", "20", "40", "--seeds", "0", "--threads", "1")
    rows = json.loads((tmp_path / "out" / "budget_continued.json").read_text())["continued"]
    # one fresh head with the default budget, then one continued run per step count, same labels
    assert [(r["continued"], r["steps"]) for r in rows] == [(False, 300), (True, 20), (True, 40)]
    assert {r["labels"] for r in rows} == {100} and {r["first_labels"] for r in rows} == {50}
    assert all(0.0 <= r["nn1"] <= 1.0 for r in rows) and "continued from 50" in out


def test_sources_smoke(tmp_path: Path) -> None:
    out = run("bench_sources.py", tmp_path, "--datasets", "synthetic", "--losses", "cross_entropy", "triplet",
              "--seeds", "0", "1", "--max-steps", "30", "--threads", "1")
    data = json.loads((tmp_path / "out" / "sources.json").read_text())
    by_loss: dict[str, list[str]] = {}
    for r in data["summary"]:
        by_loss.setdefault(r["loss"], []).append(r["source"])
        assert r["seeds"] == 2 and 0.0 < r["coverage"] <= 1.0
        assert r["accuracy"] is not None and 0.0 <= r["accuracy"] <= 1.0
    # softmax only where the loss has a classifier; knn+walk suggests only where both agree
    assert by_loss == {"cross_entropy": ["knn vote", "knn 1nn", "walk", "knn+walk", "softmax"],
                       "triplet": ["knn vote", "knn 1nn", "walk", "knn+walk"]}
    assert len(data["rows"]) == 2 * 9 and "prec@20%" in out
    pool = data["rows"][0]["pool"]
    assert pool == 2000 - 100  # synthetic: 2000 training points, 10 labels per class
    table = run("report.py", tmp_path, str(tmp_path / "out" / "sources.json"))
    assert "| synthetic | 100 | triplet |" in table and table.count("| synthetic |") == 2
    assert "**" in table  # the best source of each row is marked



HELP_ALL = """
import contextlib, io, runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None) or not out.getvalue().startswith("usage:"):
            failed.append(f"{path}: exit {e.code}")
    except Exception as e:
        failed.append(f"{path}: {e!r}")
    else:
        failed.append(f"{path}: no usage printed")
print("\\n".join(failed))
"""


def test_every_benchmark_script_prints_its_help() -> None:
    """``--help`` works for every script (argparse formats each help string, so a bare % crashes it).
    One interpreter runs them all, so torch is imported once."""
    scripts = sorted(str(p) for p in BENCH.glob("*.py") if not p.name.startswith("_"))
    proc = subprocess.run([sys.executable, "-c", HELP_ALL, *scripts], capture_output=True, text=True,
                          cwd=BENCH, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(scripts) >= 10 and proc.stdout.strip() == "", proc.stdout


def test_calibration_smoke(tmp_path: Path) -> None:
    run("bench_calibration.py", tmp_path, "--datasets", "synthetic", "--pool", "300", "--per-class", "5",
        "--batch-percent", "20", "--max-rounds", "2", "--max-steps", "20", "--out", "calibration_smoke")
    data = json.loads((tmp_path / "out" / "calibration_smoke.json").read_text())
    runs = {r["reviewer"]: r for r in data["runs"]}
    assert set(runs) == {"careful", "trusting"}
    assert runs["careful"]["final_label_accuracy"] == 1.0  # the careful reviewer fixes every wrong suggestion
    for r in runs.values():
        assert len(r["rounds"]) == 2 and 0.0 <= r["mae"] <= r["max_error"] <= 1.0
        for w in r["rounds"]:
            assert w["batch"] == 50 and 0.0 <= w["true"] <= 1.0 and w["low"] <= w["stated"] <= w["high"]
    run("bench_calibration.py", tmp_path, "--datasets", "synthetic", "--pool", "300", "--per-class", "5",
        "--batch-percent", "20", "--max-rounds", "2", "--max-steps", "20", "--fresh-fold-heads",
        "--train-precision", "float32", "--out", "calibration_smoke_fresh")
    with bench_path():
        from report import block_text

        table = block_text(["--calibration", "calibration_smoke.json", "calibration_smoke_fresh.json"],
                           tmp_path / "out")
    rows = [line for line in table.splitlines() if line.startswith("| fold heads")]
    assert [r.split("|")[1].strip() for r in rows] == [
        "fold heads 512 wide, 100 steps, reused while the anchors are unchanged, training auto, seed 0"] * 2 + [
        "fold heads 512 wide, 100 steps, afresh each round, training float32, seed 0"] * 2


def test_scratch_and_auto_smoke(tmp_path: Path) -> None:
    out = run("bench_scratch.py", tmp_path, "--dataset", "synthetic_images", "--losses", "cross_entropy",
              "--steps", "3", "--per-class", "3", "--k", "2", "--unlabeled-batch", "4")
    data = json.loads((tmp_path / "out" / "scratch_synthetic_images.json").read_text())
    (row,) = data["rows"]
    assert row["net"] == "hoffer_mnist" and row["steps"] == 3 and 0.0 <= row["acc_1nn"] <= 1.0
    assert row["finetune"]["stages"] in (0, "all") and "1-NN" in out
    run("bench_auto.py", tmp_path, "--datasets", "synthetic_images", "--pool", "120", "--per-class", "4",
        "--image-size", "32", "--finetune-steps", "2")
    auto = json.loads((tmp_path / "out" / "auto_choice.json").read_text())
    (choice,) = auto["rows"]
    assert choice["labels"] == 40 and set(choice["scores"]) == {"frozen efficientnet_lite0 features + head",
                                                                 "hoffer_cifar trained from scratch + consistency"}
    assert choice["chosen"] in choice["scores"] and choice["reason"]
    with bench_path():
        from report import report

        for name in ("scratch_synthetic_images.json", "auto_choice.json"):
            assert "|" in report(tmp_path / "out" / name)
