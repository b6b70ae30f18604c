"""The claims report: paired intervals, both selection rules, convergence, every verdict."""
import json
import math
from pathlib import Path

import pytest

from scripts import claims

TABLE = Path(__file__).resolve().parents[1] / "scripts" / "paper_table1.csv"


# -- paired statistics ---------------------------------------------------------------------
def test_paired_interval_matches_a_hand_computed_case():
    p = claims.paired([1.0, 2.0, 3.0])
    # mean 2, sample std 1, SE 1/sqrt(3); t(0.975, 2 df) = 4.302653 (tables)
    half = 4.302653 / math.sqrt(3)
    assert (p.mean, p.std, p.n) == (2.0, 1.0, 3)
    assert p.low == pytest.approx(2 - half, abs=1e-5) and p.high == pytest.approx(2 + half,
                                                                                  abs=1e-5)
    assert p.half_width == pytest.approx(half, abs=1e-5)
    assert p.mde == pytest.approx(2.8 / math.sqrt(3))
    one = claims.paired([0.7])
    assert one.low is None and one.half_width is None and one.mde is None and one.mean == 0.7
    with pytest.raises(ValueError):
        claims.paired([])


def write_run(folder: Path, accs: list[float], losses=None, epoch0: float | None = None,
              **args):
    """A finished run: epochs.jsonl (epoch 0 = the start model when given), result.json,
    args.json."""
    folder.mkdir(parents=True, exist_ok=True)
    losses = losses or [1.0 / (i + 1) for i in range(len(accs))]
    lines = [] if epoch0 is None else [{"epoch": 0, "test/top1": epoch0}]
    lines += [{"epoch": i + 1, "test/top1": a, "train/loss": l}
              for i, (a, l) in enumerate(zip(accs, losses))]
    (folder / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "result.json").write_text("{}")
    (folder / "args.json").write_text(json.dumps({"num_epochs": len(accs), **args}))


def test_both_selection_rules_on_hand_made_epochs(tmp_path):
    # epoch 0 (the start model, 0.90) never counts: it is no fine-tuned epoch
    write_run(tmp_path / "control", [0.80, 0.85, 0.82], epoch0=0.90)
    write_run(tmp_path / "channel", [0.81, 0.83, 0.84], epoch0=0.90)
    control = claims.finished(tmp_path / "control")
    treated = claims.finished(tmp_path / "channel")
    assert claims.select(treated, "final") - claims.select(control, "final") == pytest.approx(2)
    assert claims.select(treated, "best") - claims.select(control, "best") == pytest.approx(-1)
    assert claims.select(control, "best") - claims.select(control, "final") == pytest.approx(3)


def test_a_resumed_run_s_repeated_epoch_counts_once(tmp_path):
    write_run(tmp_path / "r", [0.5, 0.6, 0.7])
    with open(tmp_path / "r" / "epochs.jsonl", "a") as f:     # resumed: epoch 3 again
        f.write(json.dumps({"epoch": 3, "test/top1": 0.65, "train/loss": 0.3}) + "\n")
    rows = claims.finished(tmp_path / "r")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and claims.select(rows, "final") == 65.0


def test_an_unfinished_run_is_skipped(tmp_path):
    write_run(tmp_path / "r", [0.5, 0.6])
    args = json.loads((tmp_path / "r" / "args.json").read_text())
    (tmp_path / "r" / "args.json").write_text(json.dumps({**args, "num_epochs": 4}))
    assert claims.finished(tmp_path / "r") is None          # 2 of 4 epochs
    write_run(tmp_path / "s", [0.5, 0.6])
    (tmp_path / "s" / "result.json").unlink()
    assert claims.finished(tmp_path / "s") is None


# -- convergence -----------------------------------------------------------------------------
def test_a_flat_curve_is_converged():
    acc = [50, 70, 80, 85, 87, 88, 88.9, 89, 88.9, 89]
    loss = [2, 1, .6, .5, .45, .42, .41, .40, .40, .40]
    c = claims.convergence(acc, loss)
    assert c["window"] == 2 and c["acc_gap"] == pytest.approx(0.05) and c["converged"]


def test_a_curve_still_rising_is_not_converged():
    acc = [50, 60, 70, 75, 80, 82, 84, 86, 88, 90]
    loss = [2, 1, .6, .5, .45, .42, .41, .40, .40, .40]
    c = claims.convergence(acc, loss)
    assert c["acc_gap"] == pytest.approx(1.0) and not c["acc_ok"] and not c["converged"]


def test_a_train_loss_still_falling_is_not_converged():
    acc = [80] * 10
    loss = [1, .9, .8, .7, .6, .55, .5, .45, .4, .35]
    c = claims.convergence(acc, loss)         # last fifth: 0.4 -> 0.35, of a fall 1 -> 0.375
    assert c["acc_ok"] and c["loss_change"] == pytest.approx(-0.05 / 0.625)
    assert not c["loss_ok"] and not c["converged"]
    assert claims.convergence(acc, loss, loss_tol=0.1)["converged"]
    with pytest.raises(ValueError):
        claims.convergence([80], [1.0])


def test_the_accuracy_limit_is_one_standard_error_on_a_small_test_set():
    """Best 58.8 over a flat tail of mean 58.3 (gap 0.5): beyond 0.3, but on 3,000 test images
    one standard error of 58.8 % is 100 * sqrt(.588 * .412 / 3000) = 0.90 points."""
    acc = [20, 40, 50, 55, 57, 58, 58.3, 58.8, 58.3, 58.3]
    loss = [2.3, 1.0, .5, .2, .1, .05, .03, .02, .02, .02]
    c = claims.convergence(acc, loss)
    assert c["acc_gap"] == pytest.approx(0.5) and c["acc_limit"] == 0.3 and not c["acc_ok"]
    c = claims.convergence(acc, loss, num_test=3000)
    assert c["acc_limit"] == pytest.approx(100 * math.sqrt(.588 * .412 / 3000))
    assert c["acc_limit"] == pytest.approx(0.8986, abs=1e-4) and c["converged"]
    # a large test set: the standard error is below 0.3, the 0.3 stands
    assert claims.convergence(acc, loss, num_test=100_000)["acc_limit"] == 0.3


def test_the_test_set_size_is_read_from_the_models_test_record(tmp_path):
    assert claims.test_images(tmp_path) is None
    (tmp_path / "bench_x_val.json").write_text(json.dumps({"num_images": 1000}))
    assert claims.test_images(tmp_path) is None
    (tmp_path / "bench_x_test.json").write_text(json.dumps({"num_images": 3000, "top1": .5}))
    assert claims.test_images(tmp_path) == 3000


def test_a_loss_near_zero_is_flat_by_its_share_of_the_fall():
    """A model that fits its training set: 0.012 -> 0.010 is -18 % of its own level but 0.1 %
    of what the loss fell over training: flat."""
    acc = [60] * 10
    loss = [2.3, 1.0, .5, .2, .1, .05, .03, .02, .012, .010]
    c = claims.convergence(acc, loss)
    assert c["loss_change"] == pytest.approx(-0.002 / (2.3 - 0.011))
    assert c["loss_ok"] and c["converged"]
    # a loss that never fell is not flat, however level it is
    c = claims.convergence(acc, [2.3] * 10)
    assert c["loss_change"] == -math.inf and not c["loss_ok"]


# -- verdicts ------------------------------------------------------------------------------
@pytest.mark.parametrize("low, high, paper, expected", [
    (0.10, 0.50, 0.15, claims.HOLDS),          # excludes 0 on the paper's side
    (0.50, 0.90, 0.15, claims.HOLDS),          # larger than the paper's: still its sign
    (-3.0, -2.0, -1.44, claims.HOLDS),         # a negative claim
    (-0.50, -0.10, 0.15, claims.FAILS),        # the opposite sign
    (-0.50, 0.10, 0.15, claims.FAILS),         # excludes the paper's number, shows no sign
    (-0.50, 0.50, -1.44, claims.FAILS),
    (-0.50, 0.50, 0.15, claims.UNRESOLVED),    # contains 0 and the paper's number
    (0.00, 0.30, 0.15, claims.UNRESOLVED),     # an endpoint counts as inside
    (-2.0, 0.50, -1.44, claims.UNRESOLVED),
    (-0.20, 0.30, 0.0, claims.UNRESOLVED),     # paper 0.00: no side to hold on
    (0.10, 0.30, 0.0, claims.FAILS),           # paper 0.00, an effect it did not report
    (-0.30, -0.10, 0.0, claims.FAILS),
    (None, None, 0.15, "not tested (n < 2)"),
    (-1.0, 1.0, None, "no paper number"),
])
def test_every_verdict_branch(low, high, paper, expected):
    assert claims.verdict(low, high, paper) == expected


def test_the_paper_number_is_the_row_or_the_median_over_the_paper_networks():
    assert claims.paper_gain(TABLE, "vgg16", "fashion_mnist", "channel") == (0.10,
                                                                           "paper, vgg16")
    value, source = claims.paper_gain(TABLE, "smallcnn", "fashion_mnist", "channel")
    assert value == pytest.approx((0.11 + 0.15) / 2) and "median over its 16 networks" in source
    value, _ = claims.paper_gain(TABLE, "smallcnn", "fashion_mnist", "space")
    assert value == pytest.approx((-2.53 - 2.01) / 2)
    assert claims.paper_gain(TABLE, "smallcnn", "fashion_mnist", "all") == (None,
                                                                          "not in the paper")
    assert claims.paper_gain(TABLE, "vgg16", "fashion_mnist", "all")[0] is None


# -- one setting from hand-made run folders ----------------------------------------------------
def hand_made_setting(root: Path, acc_tail=(0.90, 0.90)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({
        "model_name": "smallcnn", "base_data": "fashion_mnist", "decoy_kind": "none",
        "train_per_class": 1000, "train_epochs": 5, "doctor_epochs": 2, "lr": 0.01,
        "batch_size": 128}))
    control = {0: [0.80, 0.82], 1: [0.80, 0.81], 2: [0.80, 0.80]}
    channel = {0: [0.81, 0.83], 1: [0.81, 0.83], 2: [0.81, 0.84]}  # final +1 +2 +4, best +1 +2 +4
    for s in range(3):
        seed = root / f"seed{s}"
        write_run(seed / "decoy" / "models", [0.5, 0.7, 0.85, *acc_tail],
                  [1.0, 0.6, 0.5, 0.45, 0.45])
        write_run(seed / "control", control[s], alpha=0)
        if s == 0:   # the first seed's +Channel is the search run with the chosen alpha
            write_run(seed / "search" / "channel_a0.01", [0.99, 0.99], alpha=0.01)
            (seed / "search" / "channel_a0.01" / "bench_x_val.json").write_text('{"top1": 0.9}')
            write_run(seed / "search" / "channel_a0.1", channel[s], alpha=0.1)
            (seed / "search" / "channel_a0.1" / "bench_x_val.json").write_text('{"top1": 0.5}')
        else:
            write_run(seed / "channel", channel[s], alpha=0.1)
    return root


def test_the_first_seed_uses_the_search_run_the_benchmark_chose(tmp_path):
    root = hand_made_setting(tmp_path)
    assert claims.variant_run(root / "seed0", "channel") == root / "seed0/search/channel_a0.1"
    assert claims.variant_run(root / "seed1", "channel") == root / "seed1/channel"
    # with no other seed to read the choice from: the best on val
    for s in (1, 2):
        (root / f"seed{s}" / "channel" / "args.json").unlink()
    assert claims.variant_run(root / "seed0", "channel") == root / "seed0/search/channel_a0.01"


def test_analyse_pairs_seeds_and_gates_on_convergence(tmp_path):
    res = claims.analyse(hand_made_setting(tmp_path / "ok"), TABLE, 0.3, 0.05)
    assert res["converged"] and set(res["checks"]) == {"seed0", "seed1", "seed2"}
    g = res["gains"]["channel"]
    assert g["final"].diffs == pytest.approx([1, 2, 4]) and g["best"].diffs == pytest.approx(
        [1, 2, 4])
    assert g["paper"] == pytest.approx(0.13) and res["bias"].diffs == pytest.approx([0, 0, 0])
    text = claims.report({"ok": res}, tmp_path / "fig", Path("fig"), 0.3, 0.05)
    assert "| Table 1, fashion_mnist, +Channel (smallcnn) | final epoch |" in text
    assert claims.HOLDS in text        # CI of [1, 2, 4] excludes 0, the paper's +0.13 positive
    still_rising = claims.analyse(hand_made_setting(tmp_path / "rising", (0.88, 0.90)),
                                  TABLE, 0.3, 0.05)
    assert not still_rising["converged"]
    text = claims.report({"rising": still_rising}, tmp_path / "fig", Path("fig"), 0.3, 0.05)
    assert "**not converged**" in text and "not tested (not converged)" in text
    assert "**not converged** (seed0, seed1, seed2): fewer than 2 seeds" in text
    assert "**not converged** ()" not in text
    # one converged seed, none failing: not enough, and nothing to name
    import shutil
    one = hand_made_setting(tmp_path / "one")
    for s in ("seed1", "seed2"):
        shutil.rmtree(one / s)
    text = claims.report({"one": claims.analyse(one, TABLE, 0.3, 0.05)}, tmp_path / "fig",
                         Path("fig"), 0.3, 0.05)
    assert "Setting: **not converged**: fewer than 2 seeds with converged models" in text
    assert claims.HOLDS not in text.replace("*holds* =", "")
    assert "| Table 2: gain vs annotated images per class | – | – | – | not run" in text


def test_a_treatment_identical_to_the_control_is_said_so(tmp_path):
    """A constraint that never reaches the weights leaves the control's curve: the gain is
    exactly 0 (a degenerate interval) and the report says why, not only 'does not hold'."""
    root = hand_made_setting(tmp_path / "inert")
    for s in range(3):
        control = claims.finished(root / f"seed{s}" / "control")
        run = claims.variant_run(root / f"seed{s}", "channel")
        write_run(run, [r["test/top1"] for r in control], alpha=0.1)
    res = claims.analyse(root, TABLE, 0.3, 0.05)
    g = res["gains"]["channel"]
    assert g["identical"] and g["final"].diffs == [0, 0, 0] and g["final"].low == 0
    text = claims.report({"inert": res}, tmp_path / "fig", Path("fig"), 0.3, 0.05)
    assert "+0.00 [+0.00, +0.00], n = 3 (identical to the control at every epoch)" in text
    assert "+Channel: test top-1 identical to the control's at every epoch" in text
    # one epoch apart in one seed: no longer identical
    write_run(root / "seed1" / "channel", [0.5, 0.99], alpha=0.1)
    assert not claims.analyse(root, TABLE, 0.3, 0.05)["gains"]["channel"]["identical"]


def test_a_seed_whose_model_has_not_converged_is_left_out_of_the_pairs(tmp_path):
    root = hand_made_setting(tmp_path / "mixed")
    write_run(root / "seed1" / "decoy" / "models", [0.5, 0.7, 0.85, 0.88, 0.90],
              [1.0, 0.6, 0.5, 0.45, 0.45])           # seed 1 still rising
    res = claims.analyse(root, TABLE, 0.3, 0.05)
    assert res["converged"] and res["unconverged"] == ["seed1"]
    assert res["gains"]["channel"]["seeds"] == ["seed0", "seed2"]
    assert res["gains"]["channel"]["final"].diffs == pytest.approx([1, 4])
    assert res["bias"].n == 2
    text = claims.report({"mixed": res}, tmp_path / "fig", Path("fig"), 0.3, 0.05)
    assert "(seed1) are left out of the paired gains" in text


def test_a_setting_without_finished_pairs_is_listed_as_not_tested(tmp_path):
    root = hand_made_setting(tmp_path / "early")
    for s in range(3):
        (root / f"seed{s}" / "control" / "result.json").unlink()
    res = claims.analyse(root, TABLE, 0.3, 0.05)
    assert res["converged"] and not res["gains"]
    text = claims.report({"early": res}, tmp_path / "fig", Path("fig"), 0.3, 0.05)
    assert ("| Table 1, fashion_mnist (smallcnn) | – | – | – | not tested: no finished "
            "treatment/control pair in early yet |") in text


def test_a_folder_that_is_no_benchmark_output_is_one_error_line(tmp_path, capsys):
    args = claims.get_args_parser().parse_args(["--runs", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        claims.main(args, [])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("python -m scripts.claims: error: --runs")


# -- end to end on a tiny benchmark output ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    from scripts import shortcut_benchmark
    from tests.test_shortcut_benchmark import write_idx
    root = tmp_path_factory.mktemp("bench")
    write_idx(root / "raw", per_class=8)
    shortcut_benchmark.main(shortcut_benchmark.get_args_parser().parse_args([
        "--base_data", "mnist", "--source", str(root / "raw"), "--no_verify",
        "--data_root", str(root / "data"), "--out_dir", str(root / "out"),
        "--results_dir", str(root / "results"), "--decoy_kind", "none",
        "--train_per_class", "6", "--val_per_class", "1", "--seeds", "0,1",
        "--train_epochs", "2", "--doctor_epochs", "2", "--budget", "2", "--num_high", "2",
        "--batch_size", "16", "--variants", "control,channel,space",
        "--alphas", "0.01,0.1", "--betas", "0.5"]))
    return root / "out"


@pytest.mark.e2e
def test_report_end_to_end_writes_results_md_in_its_folder_only(tiny_benchmark, tmp_path,
                                                                monkeypatch):
    repo_results = Path(claims.__file__).resolve().parents[1] / "RESULTS.md"
    before = repo_results.read_bytes() if repo_results.is_file() else None
    monkeypatch.chdir(tmp_path)
    argv = ["--runs", str(tiny_benchmark), "--paper_table", str(TABLE),
            "--results_file", str(tmp_path / "RESULTS.md"),
            "--figures_dir", str(tmp_path / "results" / "claims"),
            "--acc_tol", "100", "--loss_tol", "100"]
    text = claims.main(claims.get_args_parser().parse_args(argv), argv)
    chosen = json.loads((tiny_benchmark.parent / "results" / "gains.json").read_text())["chosen"]
    assert claims.variant_run(tiny_benchmark / "seed0", "channel") == (
        tiny_benchmark / "seed0" / "search" / f"channel_a{chosen['channel']:g}")
    written = (tmp_path / "RESULTS.md").read_text()
    assert f"`python -m scripts.claims {' '.join(argv)}`" in written
    assert "<!-- section: claims -->" in written and text.strip() in written
    for label in ("+Channel", "+Space"):
        for rule in ("final epoch", "best test epoch"):
            assert f"| Table 1, mnist, {label} (smallcnn) | {rule}" in written
    assert "| 2 | " in written             # n = 2 seeds paired
    assert (tmp_path / "results" / "claims" / "out_convergence.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md", "results"]
    after = repo_results.read_bytes() if repo_results.is_file() else None
    assert after == before
    # rerun with a tolerance nothing meets: the same file, one section, now not converged
    argv[-1] = "-1"
    claims.main(claims.get_args_parser().parse_args(argv), argv)
    again = (tmp_path / "RESULTS.md").read_text()
    assert again.count("<!-- section: claims -->") == 1 and "not tested (not converged)" in again


def test_fig3_is_tabulated_from_the_robustness_json(tmp_path):
    rows = [{"delta": 0.0, "normal_true": 1.0, "adversarial_true": 0.0,
             "adversarial_same_false": 1.0},
            {"delta": 0.3, "normal_true": 0.59, "adversarial_true": 0.25,
             "adversarial_same_false": 0.19},
            {"delta": 0.5, "normal_true": 0.3, "adversarial_true": None,
             "adversarial_same_false": 0.1}]
    path = tmp_path / "noise_robustness.json"
    path.write_text(json.dumps({"model_name": "smallcnn", "layer": "features.0", "eps": 0.0314,
                                "num_normal": 100, "num_adversarial": 37, "repeats": 10,
                                "data_type": "test", "model_path": "m.pth", "rows": rows}))
    text = claims.report({}, tmp_path, Path("."), 0.3, 0.05, path)
    assert "| 0.3 | 0.590 | 0.250 | 0.190 |" in text and "| 0.5 | 0.300 | – | 0.100 |" in text
    assert "at δ = 0.3: normal → true 0.590, adversarial → true 0.250" in text  # largest ≤ 0.3
    assert "not run" not in text.split("Fig. 3")[1].split("\n")[0]
    assert f"| {claims.FIG3} | – | – | – | not run" in claims.report({}, tmp_path, Path("."),
                                                                     0.3, 0.05)


# -- the driver script ---------------------------------------------------------------------
def run_driver(tmp_path, **env):
    import os
    import subprocess
    log = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    stub.chmod(0o755)
    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_claims.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(stub), **env})
    return done, (log.read_text().splitlines() if log.is_file() else [])


def test_the_driver_runs_one_benchmark_per_network_then_the_report(tmp_path):
    results = tmp_path / "results"   # where Fig. 3's JSON would be: none there yet
    done, calls = run_driver(tmp_path, models="smallcnn vgg16", seeds="3,1",
                             claims="channel all", train_epochs="7", results_root=str(results))
    assert done.returncode == 0, done.stderr
    assert len(calls) == 4
    for call, model in zip(calls[:2], ("smallcnn", "vgg16")):
        assert call.startswith("-m scripts.shortcut_benchmark --model_name " + model)
        assert "--results_file" not in call          # only the report writes RESULTS.md
        for flag in ("--decoy_kind none", "--seeds 3,1", "--train_epochs 7",
                     "--variants control,channel,all", "--alphas 0.001,0.01,0.078125",
                     f"--out_dir output/claims/{model}_fmnist"):
            assert flag in call
    # Fig. 3 on the first network's first seed, with the benchmark's data
    assert calls[2] == ("-m core.robustness --model_name smallcnn --data_name "
                        "decoy_fashion_mnist --model_path "
                        "output/claims/smallcnn_fmnist/seed3/decoy/models/last.pth --data_dir "
                        "data/shortcut_fashion_mnist_none_1000 --deltas "
                        f"0,0.05,0.1,0.2,0.3,0.5,0.8,1.0 --out_dir {results}/claims_fig3_smallcnn")
    # (the stub wrote no Fig. 3 JSON: the report is not pointed at one)
    assert calls[3] == ("-m scripts.claims --runs output/claims/smallcnn_fmnist "
                        "output/claims/vgg16_fmnist --acc_tol 0.3 --loss_tol 0.05 "
                        "--results_file RESULTS.md --figures_dir results_figures")
    (tmp_path / "b").mkdir()
    done, calls = run_driver(tmp_path / "b", report_only="1", fig3="0")
    assert done.returncode == 0 and len(calls) == 1 and calls[0].startswith("-m scripts.claims")


def test_the_driver_refuses_an_unknown_claim_in_one_line(tmp_path):
    done, calls = run_driver(tmp_path, claims="channel table9")
    assert done.returncode == 2 and not calls
    assert done.stderr.strip() == ("reproduce_claims.sh: error: claims: unknown 'table9' "
                                   "(valid: channel space all)")
