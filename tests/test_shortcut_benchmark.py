"""The shortcut benchmark end to end on tiny generated IDX files (real on-disk format)."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from metrics.groups import worst_group_accuracy
from preprocessing import photo_backgrounds
from scripts import shortcut_benchmark, shortcut_score


def write_idx(folder: Path, per_class: int = 14, size: int = 28):
    """MNIST-format files whose images hold a class-dependent bright block (the object)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", per_class * 10), ("t10k", 4 * 10)):
        labels = np.arange(n) % 10
        images = np.zeros((n, size, size), np.uint8)
        for i, c in enumerate(labels):
            top = 6 + (c % 5) * 2
            images[i, top:top + 10, 8 + c // 5 * 4:16 + c // 5 * 4] = 150 + rng.integers(0, 100)
        for stem, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051),
                                   (f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), 2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (folder / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))


@pytest.mark.e2e
def test_benchmark_tiny_end_to_end_and_resume(tmp_path):
    write_idx(tmp_path / "raw")
    argv = ["--base_data", "mnist", "--source", str(tmp_path / "raw"),
            "--data_root", str(tmp_path / "data"), "--out_dir", str(tmp_path / "out"),
            "--results_dir", str(tmp_path / "results"), "--train_per_class", "10",
            "--val_per_class", "2", "--seeds", "0,1", "--train_epochs", "1",
            "--doctor_epochs", "1", "--budget", "2", "--num_high", "3", "--batch_size", "16",
            "--gammas", "0.5,1", "--rrr_lambdas", "1", "--rrr_budget_lambdas", "1",
            "--replay", "4", "--no_verify"]
    args = shortcut_benchmark.get_args_parser().parse_args(argv)
    result = shortcut_benchmark.main(args)
    rows = result["rows"]
    assert set(rows) == {"clean", "untreated", "control", "all", "rrr_all", "rrr_budget",
                         "kernels_reinit", "kernels_reinit_random", "kernels_reinit_deep"}
    assert set(rows["kernels_reinit"][0]) == {"val", "test", "clean_test", "background_share"}
    assert len(rows["kernels_reinit"][0]["background_share"]) == 10
    assert all(len(v) == 2 for v in rows.values())
    assert set(result["search"]["kernels_reinit"]) == {"0.5", "1"}
    assert result["chosen"]["kernels_reinit"] in (0.5, 1.0)
    # the budget variant: the annotated masks only, replayed in every batch
    recorded = json.loads((tmp_path / "out" / "seed1" / "rrr_budget" / "args.json").read_text())
    assert recorded["replay_annotated"] == 4 and recorded["mask_dir"].endswith("seed1/masks")
    reinit = json.loads((tmp_path / "out" / "seed1" / "kernels_reinit" / "args.json").read_text())
    assert reinit["kernel_reinit"] is True and reinit["gamma"] == result["chosen"]["kernels_reinit"]
    control = json.loads((tmp_path / "out" / "seed1" / "kernels_reinit_random" / "args.json")
                         .read_text())   # its control: same gamma, random kernels
    assert control["kernel_reinit_random"] is True and control["gamma"] == reinit["gamma"]
    assert "kernels_reinit_random" not in result["search"]
    deep = json.loads((tmp_path / "out" / "seed1" / "kernels_reinit_deep" / "args.json")
                      .read_text())  # the first two convs, same gamma
    assert deep["kernel_layers"] == "-1,-2" and deep["gamma"] == reinit["gamma"]
    assert deep["kernel_reinit"] is True and not deep["kernel_reinit_random"]
    text = (tmp_path / "results" / "shortcut.md").read_text()
    assert "+Kernels re-initialised (ours, not in the paper)" in text
    assert "Background kernels re-initialised" in text and "± " in text and "chosen" in text
    # the table's columns, computed from the rows: texture has no groups, so no worst group
    assert ("| model | random-decoy test top-1 | decoy-free test top-1 | share of the gap "
            "[95 % CI] | meets the goal | vs control, paired [95 % CI] | val top-1 |") in text
    assert "Yardstick check " in text and "worst group" not in text
    scored = result["score"]["models"]
    assert scored == shortcut_score.summarize(rows)["models"]
    deep = next(line for line in text.splitlines()
                if line.startswith("| +Kernels re-initialised (ours, not in the paper) |"))
    cells = deep.split(" | ")
    assert cells[5] == shortcut_score.fmt_interval(scored["kernels_reinit_deep"]["vs_control"])
    assert cells[5].count("[") == 1                      # two seeds: an interval
    assert cells[4] == shortcut_score.goal_cell(scored["kernels_reinit_deep"]["goal"])
    assert "2 seeds < 3" in cells[4]                     # never met with two seeds
    assert (tmp_path / "results" / "shortcut.png").stat().st_size > 1000
    # 20 training + 4 val images per class after the split, 2 masks per class from sift low
    assert len(list((tmp_path / "out" / "seed0" / "masks").rglob("*.png"))) == 2 * 10
    data = tmp_path / "data" / "shortcut_mnist_texture60_10"
    assert len(list((data / "val").rglob("*.png"))) == 20
    # resumed: every run is reused, the same numbers come back
    mtime = (tmp_path / "out" / "seed1" / "kernels_reinit_deep" / "result.json").stat().st_mtime
    again = shortcut_benchmark.main(args)
    assert again["rows"] == rows
    assert (tmp_path / "out" / "seed1" / "kernels_reinit_deep" / "result.json"
            ).stat().st_mtime == mtime
    assert json.loads((tmp_path / "results" / "shortcut.json").read_text())["rows"] == rows


def test_worst_group_joins_cached_predictions_to_the_test_groups(tmp_path):
    """Hand-built: a test split's groups.csv and a model's cached predictions; the worst
    group is (class 1, place disagrees): 1 right of 3."""
    args = shortcut_benchmark.get_args_parser().parse_args(
        ["--decoy_kind", "photo", "--data_root", str(tmp_path / "data")])
    bench = shortcut_benchmark.Benchmark(args)
    test = bench.decoy_dir / "test"
    test.mkdir(parents=True)
    files = ["a/0.png", "a/1.png", "a/2.png", "b/3.png", "b/4.png", "b/5.png", "b/6.png"]
    labels = [0, 0, 0, 1, 1, 1, 1]
    agrees = [1, 1, 0, 0, 0, 0, 1]
    preds = [0, 1, 0, 1, 0, 0, 1]     # groups 1: 1/2, 0: 1/1, 2: 1/3, 3: 1/1
    (test / "groups.csv").write_text("file,class,place,agrees,group,top,left,side\n" + "".join(
        f"{f},{c},sky,{a},{2 * c + a},0,0,28\n" for f, c, a in zip(files, labels, agrees)))
    model = tmp_path / "run" / "last.pth"
    model.parent.mkdir()
    # cached in the dataset order, which need not be the csv's
    order = [6, 0, 3, 1, 4, 2, 5]
    (model.parent / f"bench_{bench.decoy_dir.name}_test_predictions.json").write_text(
        json.dumps({"files": [files[i] for i in order], "labels": [labels[i] for i in order],
                    "preds": [preds[i] for i in order]}))
    assert bench.worst_group(model) == pytest.approx(1 / 3)
    (test / "groups.csv").write_text("file,class,place,agrees,group,top,left,side\n"
                                     "a/0.png,0,sky,1,1,0,0,28\n")
    with pytest.raises(ValueError, match="no group for 6 test image"):
        bench.worst_group(model)
    (test / "groups.csv").unlink()
    assert bench.worst_group(model) is None            # no groups: not defined


@pytest.mark.e2e
def test_photo_tiny_run_reports_the_worst_group(tmp_path):
    write_idx(tmp_path / "raw", per_class=8)
    argv = ["--base_data", "fashion_mnist", "--source", str(tmp_path / "raw"), "--no_verify",
            "--data_root", str(tmp_path / "data"), "--out_dir", str(tmp_path / "out"),
            "--results_dir", str(tmp_path / "results"), "--decoy_kind", "photo",
            "--train_per_class", "6", "--val_per_class", "1", "--seeds", "0",
            "--train_epochs", "1", "--doctor_epochs", "1", "--budget", "2", "--num_high", "2",
            "--batch_size", "16", "--variants", "control,rrr_all", "--rrr_lambdas", "1"]
    args = shortcut_benchmark.get_args_parser().parse_args(argv)
    result = shortcut_benchmark.main(args)
    rows = result["rows"]
    for key in ("clean", "untreated", "control", "rrr_all"):
        worst = rows[key][0]["worst_group"]
        assert 0 <= worst <= rows[key][0]["test"]       # the worst group is at most the mean
    # the cached predictions agree with the evaluation's top-1
    run = tmp_path / "out" / "seed0" / "control"
    name = "shortcut_fashion_mnist_photo0.95_6"
    cached = json.loads((run / f"bench_{name}_test_predictions.json").read_text())
    assert len(cached["files"]) == 4 * 10
    hits = sum(p == y for p, y in zip(cached["preds"], cached["labels"]))
    assert hits / len(cached["files"]) == pytest.approx(rows["control"][0]["test"])
    groups = {r["file"]: r["group"] for r in photo_backgrounds.read_groups(
        tmp_path / "data" / name / "test" / "groups.csv")}
    assert rows["control"][0]["worst_group"] == worst_group_accuracy(
        cached["preds"], cached["labels"], [groups[f] for f in cached["files"]])
    text = (tmp_path / "results" / "shortcut.md").read_text()
    assert "| worst group, random-decoy test |" in text and "Worst group:" in text
    control = next(line for line in text.splitlines() if line.startswith("| Fine-tune control"))
    assert f"| {100 * rows['control'][0]['worst_group']:.1f} ± 0.0 |" in control
    # resumed: the predictions are read back, not recomputed
    mtime = (run / f"bench_{name}_test_predictions.json").stat().st_mtime_ns
    assert shortcut_benchmark.main(args)["rows"] == rows
    assert (run / f"bench_{name}_test_predictions.json").stat().st_mtime_ns == mtime


@pytest.mark.e2e
def test_gains_without_decoy_compares_the_paper_variants(tmp_path):
    write_idx(tmp_path / "raw", per_class=8)
    args = shortcut_benchmark.get_args_parser().parse_args([
        "--base_data", "mnist", "--source", str(tmp_path / "raw"), "--no_verify",
        "--data_root", str(tmp_path / "data"), "--out_dir", str(tmp_path / "out"),
        "--results_dir", str(tmp_path / "results"), "--decoy_kind", "none",
        "--train_per_class", "6", "--val_per_class", "1", "--seeds", "0",
        "--train_epochs", "1", "--doctor_epochs", "1", "--budget", "2", "--num_high", "2",
        "--batch_size", "16", "--variants", "control,channel,space,all",
        "--alphas", "0.01,0.1", "--betas", "0.5"])
    result = shortcut_benchmark.main(args)
    assert set(result["rows"]) == {"untreated", "control", "channel", "space", "all"}
    assert set(result["search"]) == {"channel", "space"}
    assert set(result["search"]["channel"]) == {"0.01", "0.1"}
    assert result["chosen"]["space"] == 0.5 and result["chosen"]["channel"] in (0.01, 0.1)
    # +All takes the weights chosen for +Channel and +Space; their runs are the search's
    run = tmp_path / "out" / "seed0"
    paper = json.loads((run / "all" / "args.json").read_text())
    assert (paper["alpha"], paper["beta"]) == (result["chosen"]["channel"], 0.5)
    chosen_a = f"{result['chosen']['channel']:g}"
    assert json.loads((run / "search" / f"channel_a{chosen_a}" / "args.json").read_text()
                      )["alpha"] == result["chosen"]["channel"]
    assert not (run / "channel").exists() and not (run / "space").exists()
    text = (tmp_path / "results" / "gains.md").read_text()
    assert "+Channel" in text and "| test top-1 |" in text and "Gap:" not in text
    assert "alpha 0.01: " in text and "chosen on val" in text
    assert "| Untreated model |" in text
    assert not (tmp_path / "out" / "seed0" / "clean").exists()


def test_the_random_kernel_control_needs_the_variant_it_controls():
    parse = shortcut_benchmark.get_args_parser().parse_args
    with pytest.raises(ValueError, match="kernels_reinit_deep takes the gamma"):
        shortcut_benchmark.Benchmark(parse(["--variants", "control,kernels_reinit_deep"]))
    with pytest.raises(ValueError, match="kernels_reinit_random.*kernels_reinit"):
        shortcut_benchmark.Benchmark(parse(["--variants", "control,kernels_reinit_random"]))
    with pytest.raises(ValueError, match="gammas"):
        shortcut_benchmark.Benchmark(parse(["--variants", "kernels_reinit,kernels_reinit_random",
                                            "--gammas", ""]))
    shortcut_benchmark.Benchmark(parse(["--variants", "kernels_reinit,kernels_reinit_random"]))


def test_expand_px_reaches_the_spatial_runs_and_the_recorded_settings(tmp_path):
    """``--expand_px`` is the foreground expansion of +Space and +All (not of the others); a
    non-zero value is recorded in config.json, so an out_dir of another expansion is refused."""
    parse = shortcut_benchmark.get_args_parser().parse_args
    argv = ["--out_dir", str(tmp_path / "out"), "--variants", "control,space,all"]
    bench = shortcut_benchmark.Benchmark(parse(argv + ["--expand_px", "13"]))
    masks, grads = tmp_path / "masks", tmp_path / "grads"
    for name in ("space", "all"):
        flags = bench.variant_args(name, masks, grads, None)
        assert flags[flags.index("--expand_px") + 1] == "13"
        assert flags[flags.index("--mask_dir") + 1] == str(masks)
    assert "--expand_px" not in bench.variant_args("control", masks, grads, None)
    bench.check_config()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["expand_px"] == 13
    with pytest.raises(ValueError, match="expand_px: 13 there, 0 now"):
        shortcut_benchmark.Benchmark(parse(argv)).check_config()


def test_the_table_names_the_commit_of_runs_added_later():
    assert shortcut_benchmark.measured_on("a94abe5", "a94abe5") == "a94abe5"
    assert shortcut_benchmark.measured_on(None, "f208e13") is None   # write_section's own
    assert shortcut_benchmark.measured_on("a94abe5", "f208e13") == (
        "a94abe5 (first runs; later ones and the table: f208e13)")


# -- the driver script -------------------------------------------------------------------------
def run_driver(tmp_path, *args, **env):
    """scripts/shortcut_benchmark.sh with a stub python that logs its arguments."""
    import os
    import subprocess
    log = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    stub.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "shortcut_benchmark.sh"
    clean_env = {k: v for k, v in os.environ.items() if not k.islower()}
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          env={**clean_env, "PYTHON": str(stub), **env})
    return done, (log.read_text().splitlines() if log.is_file() else [])


def test_the_driver_without_families_runs_one_benchmark_as_before(tmp_path):
    done, calls = run_driver(tmp_path, "seeds=0", "results_file=RESULTS.md")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1 and calls[0].startswith("-m scripts.shortcut_benchmark ")
    for flag in ("--decoy_kind texture", "--decoy_strength 60",
                 "--out_dir output/shortcut/smallcnn_fashion_mnist_texture60",
                 "--batch_size 128 --lr 0.01 ",
                 "--results_dir results --results_file RESULTS.md"):
        assert flag in calls[0]
    _, calls = run_driver(tmp_path, "decoy_kind=none", "out_dir=o", "batch_size=32", "lr=0.05")
    assert len(calls) == 2 and "--decoy_kind none" in calls[1] and "--out_dir o " in calls[1]
    assert "--batch_size 32 --lr 0.05 " in calls[1]


def test_the_driver_runs_each_family_then_the_suite(tmp_path):
    done, calls = run_driver(tmp_path, "families=texture,photo", "seeds=0,1,2",
                             "correlation=0.9", "results_dir=res", "results_file=R.md")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 3
    for call, kind in zip(calls[:2], ("texture", "photo")):
        assert call.startswith("-m scripts.shortcut_benchmark ")
        for flag in (f"--decoy_kind {kind}", "--seeds 0,1,2", "--correlation 0.9",
                     f"--out_dir output/shortcut/smallcnn_fashion_mnist_{kind}60",
                     f"--results_dir res/{kind}", "--results_file R.md"):
            assert flag in call, (flag, call)
    assert calls[2] == ("-m scripts.suite --inputs res/texture/shortcut.json "
                        "res/photo/shortcut.json --results_dir res --results_file R.md")
    # one family may keep a given out_dir; several may not share one
    _, calls = run_driver(tmp_path, "families=glyph", "out_dir=mine")
    assert "--decoy_kind glyph" in calls[3] and "--out_dir mine " in calls[3]
    assert calls[4].startswith("-m scripts.suite --inputs results/glyph/shortcut.json")
    for bad, says in ((["families=glyph,spot", "out_dir=mine"], "out_dir=mine"),
                      (["families=glyph,,spot"], "an empty name")):
        done, again = run_driver(tmp_path, *bad)
        assert done.returncode == 2 and len(again) == 5
        assert done.stderr.count("\n") == 1
        assert done.stderr.startswith("shortcut_benchmark.sh: error: ") and says in done.stderr


def test_the_suite_gives_image_size_to_the_photo_family_only(tmp_path):
    """``image_size`` is the photo family's own setting (the driver's header: the other kinds
    ignore it); the benchmark refuses another size outside photo, so the suite must not pass
    it to the other families, or ``families=texture,photo image_size=96`` stops at texture."""
    done, calls = run_driver(tmp_path, "families=texture,photo", "image_size=96")
    assert done.returncode == 0, done.stderr
    assert "--decoy_kind texture" in calls[0] and "--image_size 64 " in calls[0]
    assert "--decoy_kind photo" in calls[1] and "--image_size 96 " in calls[1]
    # one family run alone keeps what it is given (the benchmark then refuses a wrong size)
    _, calls = run_driver(tmp_path, "decoy_kind=texture", "image_size=96")
    assert "--image_size 96 " in calls[-1]


@pytest.mark.parametrize("variant,flag", [("swap", "--swap_lambdas"), ("rrr_all", "--rrr_lambdas"),
                                          ("rrr_budget", "--rrr_budget_lambdas"),
                                          ("kernels", "--gammas")])
def test_a_variant_whose_weight_is_searched_needs_a_grid(variant, flag):
    """Its weight comes only from the search on val: an empty grid is refused at the start
    (naming the flag), not a TypeError after the trainings; +Channel/+Space fall back to
    --alpha/--beta and stay allowed."""
    parse = shortcut_benchmark.get_args_parser().parse_args
    with pytest.raises(ValueError, match=f"{flag}.*{variant}"):
        shortcut_benchmark.Benchmark(parse(["--variants", f"control,{variant}", flag, ""]))
    shortcut_benchmark.Benchmark(parse(["--variants", "control,channel,space", "--alphas", "",
                                        "--betas", ""]))
