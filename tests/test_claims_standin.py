"""The claims report on the large-image stand-in (photo, correlation 0, 96 px): Table 1's
STL-10 column, and the paper's ablations (Tables 2, 3, Fig. 6) from ablation run folders."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import claims
from tests.test_claims import write_run

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "scripts" / "paper_table1.csv"
PAPER = claims.read_paper_ablations(ROOT / "scripts" / "paper_ablations.csv")
T2 = 4.302653    # t(0.975, 2 df)


def standin_setting(root: Path, correlation: float = 0.0) -> Path:
    """Three converged seeds of squeezenet on the 96 px photo setting: control, +Space (the
    first seed's from the beta search), +All; +Space gains 1, 2, 3 points (final epoch)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({
        "model_name": "squeezenet", "base_data": "fashion_mnist", "decoy_kind": "photo",
        "correlation": correlation, "image_size": 96, "train_per_class": 300,
        "train_epochs": 5, "doctor_epochs": 2, "lr": 0.01, "batch_size": 128,
        "alpha": 0.078125, "beta": 1.0}))
    for s in range(3):
        seed = root / f"seed{s}"
        write_run(seed / "decoy" / "models", [0.5, 0.7, 0.85, 0.90, 0.90],
                  [1.0, 0.6, 0.5, 0.45, 0.45])
        write_run(seed / "control", [0.80, 0.80], alpha=0, beta=0)
        space = [0.80, 0.81 + 0.01 * s]
        if s == 0:
            write_run(seed / "search" / "space_b3", space, alpha=0, beta=3.0)
            (seed / "search" / "space_b3" / "bench_x_val.json").write_text('{"top1": 0.9}')
        else:
            write_run(seed / "space", space, alpha=0, beta=3.0)
        write_run(seed / "all", [0.80, 0.79], alpha=0.078125, beta=3.0)
    return root


def write_ablation(seed_dir: Path, study: str, control: list[float],
                   runs: dict[tuple[str, int], list[float]], extra: dict | None = None) -> None:
    """What ``scripts/ablation.py`` leaves with --work_dir = --out_dir = seedN/ablation: run
    folders (``<run>/models``) and ``ablation_<study>.json`` naming them."""
    work = seed_dir / "ablation"
    write_run(work / "control" / "models", control, epoch0=0.99)
    rows = []
    for (variant, setting), accs in runs.items():
        run = f"{study}/{variant}_{setting}"
        write_run(work / run / "models", accs, epoch0=0.99)
        rows.append({"setting": setting, "variant": variant, "run": run,
                     **(extra or {}).get(setting, {})})
    (work / f"ablation_{study}.json").write_text(json.dumps(
        {"study": study, "rows": rows, "control": {"setting": "control", "run": "control"}}))


def analyse(root: Path) -> dict:
    return claims.analyse(root, TABLE, 0.3, 0.05, PAPER)


def report(settings: dict, tmp_path: Path) -> str:
    return claims.report(settings, tmp_path / "fig", Path("fig"), 0.3, 0.05)


# -- Table 1 ---------------------------------------------------------------------------------
def test_the_stand_in_reads_table1_s_stl10_column_with_all_beside_space(tmp_path):
    res = analyse(standin_setting(tmp_path / "squeezenet_photo96"))
    space, everything = res["gains"]["space"], res["gains"]["all"]
    # squeezenet's STL-10 row of Table 1: +All +0.59, +Space +0.57
    assert (space["paper"], space["source"]) == (0.57, "paper, squeezenet")
    assert (everything["paper"], everything["source"]) == (0.59, "paper, squeezenet")
    assert space["final"].diffs == pytest.approx([1, 2, 3])
    assert everything["final"].diffs == pytest.approx([-1, -1, -1])
    text = report({"squeezenet_photo96": res}, tmp_path)
    name = "Table 1, STL-10 stand-in (96 px Fashion-MNIST on photographs)"
    half = T2 / math.sqrt(3)
    assert (f"| {name}, +Space (squeezenet) | final epoch | +0.57 (paper, squeezenet) | "
            f"+2.00 [{2 - half:+.2f}, {2 + half:+.2f}], n = 3 | {claims.UNRESOLVED} |") in text
    assert (f"| {name}, +All (squeezenet) | final epoch | +0.59 (paper, squeezenet) | "
            f"-1.00 [-1.00, -1.00], n = 3 | {claims.FAILS} |") in text
    header = text.split("### squeezenet_photo96")[1].split("**Convergence**")[0]
    assert "on the STL-10 stand-in" in header and "at 96 px" in header
    assert "correlation 0: no decoy" in header and "ImageNet stem" in header
    # what remains for large images is the real data, and the stand-in is named as such
    assert ("| Table 1, real large images (STL-10 at 96 px, mini-ImageNet at 224 px): +Channel "
            "/ +Space / +All | – | – | – | not run: needs the datasets") in text
    assert "the 96 px stand-in above is Fashion-MNIST on photographs, not STL-10" in text


def test_a_photo_setting_with_a_decoy_is_no_table1_cell(tmp_path):
    res = analyse(standin_setting(tmp_path / "p95", correlation=0.95))
    assert res["gains"]["space"]["paper"] is None
    assert res["gains"]["space"]["source"] == "decoy setting: not a Table 1 cell"
    assert not claims.is_standin(res["config"]) and res["ablations"] == {}
    text = report({"p95": res}, tmp_path)
    assert "STL-10 stand-in" not in text and "`standin_models=squeezenet bash" in text


# -- the paper's ablation numbers ------------------------------------------------------------
def test_the_paper_s_ablation_numbers_are_matched_to_our_settings():
    def gain(study, variant, setting, ratio=None):
        return claims.paper_ablation(PAPER, study, variant, setting, ratio, 96)[0]
    # Table 2 by the share of annotated training images: 10 of 300 per class is 3.3 %, the
    # paper's 4 % (200 images); 20 of 300 is 6.7 %, its 8 %; 1 of 300 is none of its
    assert gain("annotations", "space", 5, 5 / 300) == 3.22
    assert gain("annotations", "space", 10, 10 / 300) == 5.58
    assert gain("annotations", "space", 20, 20 / 300) == 6.28
    assert gain("annotations", "space", 1, 1 / 300) is None
    assert gain("annotations", "all", 10, 10 / 300) is None          # the paper ran +Space
    # Table 3 by pixels scaled from 224 px to 96 px
    assert [gain("expansion", "space", e) for e in (0, 2, 4, 9, 13, 17)] == [
        -7.48, 0.43, 3.45, 4.23, 5.58, 4.07]
    assert gain("expansion", "space", 3) is None
    assert claims.paper_ablation(PAPER, "expansion", "space", 13, None, 96)[1] == (
        "paper, vgg16 mnin, Table 3: 30 px at 224 px")
    # Fig. 6: the last conv only (= Table 1's VGG16 mini-ImageNet cell)
    assert [gain("depth", v, 0) for v in ("channel", "space", "all")] == [5.50, 5.58, 5.92]
    assert gain("depth", "space", 2) is None


# -- the ablations from run folders ---------------------------------------------------------
def test_ablation_rows_are_paired_gains_over_the_ablation_s_control(tmp_path):
    root = standin_setting(tmp_path / "squeezenet_photo96")
    # expansion 13 px: final-epoch gains 2, 3, 4 and best-epoch gains 3, 3, 4 (the start
    # model's 0.99 at epoch 0 is no fine-tuned epoch); 0 px: -1 on every seed
    for s in range(3):
        write_ablation(root / f"seed{s}", "expansion", [0.80, 0.79],
                       {("space", 13): [0.82 - 0.01 * (s > 0), 0.81 + 0.01 * s],
                        ("space", 0): [0.78, 0.78]})
    res = analyse(root)
    found = res["ablations"]["expansion"]
    assert found["seeds"] == ["seed0", "seed1", "seed2"] and set(res["ablations"]) == {
        "expansion"}
    zero, thirteen = found["entries"]
    assert (zero["setting"], thirteen["setting"]) == (0, 13)
    assert thirteen["final"].diffs == pytest.approx([2, 3, 4])
    assert thirteen["best"].diffs == pytest.approx([2, 2, 3])
    half = T2 / math.sqrt(3)          # mean 3, sample std 1 on both rules' spreads
    assert (thirteen["final"].low, thirteen["final"].high) == pytest.approx((3 - half, 3 + half))
    assert thirteen["paper"] == 5.58 and zero["paper"] == -7.48
    text = report({"squeezenet_photo96": res}, tmp_path)
    claim = "Table 3, STL-10 stand-in, +Space, mask expanded 13 px (squeezenet)"
    assert (f"| {claim} | final epoch | +5.58 (paper, vgg16 mnin, Table 3: 30 px at 224 px) | "
            f"+3.00 [{3 - half:+.2f}, {3 + half:+.2f}], n = 3 | {claims.HOLDS} |") in text
    claim0 = "Table 3, STL-10 stand-in, +Space, mask expanded 0 px (squeezenet)"
    assert f"| {claim0} | final epoch | -7.48" in text and "-1.00 [-1.00, -1.00], n = 3" in text
    assert "**Table 3 on the stand-in**" in text
    assert "| +Space | mask expanded 13 px | final epoch | 3 | +2.00 +3.00 +4.00 | +3.00 |" in text
    # the studies without outputs stay "not run" with what they need; Table 3 does not
    assert "| Table 2: gain vs annotated images per class | – | – | – | not run: needs " \
           "`standin_models=squeezenet ablations=annotations bash" in text
    assert "| Fig. 6: gain vs depth of the constrained layer | – | – | – | not run" in text
    assert "| Table 3: gain vs mask expansion | – | – | – | not run" not in text


def test_annotation_rows_skip_the_control_and_pair_only_common_seeds(tmp_path):
    root = standin_setting(tmp_path / "squeezenet_photo96")
    ratio = {0: {"annotated": 0, "ratio": 0.0}, 10: {"annotated": 100, "ratio": 10 / 300}}
    for s in (0, 1):
        write_ablation(root / f"seed{s}", "annotations", [0.80, 0.80],
                       {("space", 10): [0.80, 0.82 + 0.02 * s]}, ratio)
        table = root / f"seed{s}" / "ablation" / "ablation_annotations.json"
        data = json.loads(table.read_text())   # k = 0 with +Space: the control's own run
        data["rows"].insert(0, {"setting": 0, "variant": "space", "run": "control", **ratio[0]})
        table.write_text(json.dumps(data))
    (root / "seed1" / "ablation" / "annotations" / "space_10" / "models" / "result.json").unlink()
    res = analyse(root)
    entry, = res["ablations"]["annotations"]["entries"]       # k = 0 left out
    assert entry["seeds"] == ["seed0"] and entry["final"].diffs == pytest.approx([2])
    assert entry["paper"] == 5.58 and "200 images = 4 % of train" in entry["source"]
    text = report({"squeezenet_photo96": res}, tmp_path)
    assert ("| Table 2, STL-10 stand-in, +Space, 10 annotated images per class (3.3 % of "
            "train) (squeezenet) | final epoch | +5.58") in text
    assert "+2.00, n = 1 | not tested (n < 2) |" in text


def test_the_depth_study_tests_fig6_s_trend(tmp_path):
    root = standin_setting(tmp_path / "squeezenet_photo96")
    for s in range(3):   # last conv +2+s, conv 3 from the last -1: the trend 3, 4, 5
        write_ablation(root / f"seed{s}", "depth", [0.80, 0.80],
                       {("space", 0): [0.80, 0.82 + 0.01 * s], ("space", 3): [0.79, 0.79]})
    res = analyse(root)
    found = res["ablations"]["depth"]
    trend, = found["trend"]
    assert trend["shallow"] == 3 and trend["final"].diffs == pytest.approx([3, 4, 5])
    assert [e["paper"] for e in found["entries"]] == [5.58, None]
    text = report({"squeezenet_photo96": res}, tmp_path)
    assert ("| Fig. 6, STL-10 stand-in, +Space: last conv minus conv 3 from the last "
            "(squeezenet) | final epoch | > 0 (qualitative: deeper layers gain more) | "
            f"+4.00 [{4 - T2 / math.sqrt(3):+.2f}, {4 + T2 / math.sqrt(3):+.2f}], n = 3 | "
            f"{claims.HOLDS} |") in text
    assert ("| Fig. 6, STL-10 stand-in, +Space, conv 3 from the last (squeezenet) | final "
            "epoch | – (not in the paper) | -1.00 [-1.00, -1.00], n = 3 | no paper number |"
            ) in text


def test_an_unconverged_seed_is_left_out_of_the_ablations_too(tmp_path):
    root = standin_setting(tmp_path / "squeezenet_photo96")
    for s in range(3):
        write_ablation(root / f"seed{s}", "expansion", [0.80, 0.80],
                       {("space", 13): [0.80, 0.81 + 0.01 * s]})
    write_run(root / "seed2" / "decoy" / "models", [0.5, 0.7, 0.85, 0.88, 0.90],
              [1.0, 0.6, 0.5, 0.45, 0.45])           # still rising
    res = analyse(root)
    assert res["unconverged"] == ["seed2"]
    assert res["ablations"]["expansion"]["entries"][0]["final"].diffs == pytest.approx([1, 2])


def test_ablation_settings_are_the_benchmark_s_fine_tune_and_chosen_weights(tmp_path):
    root = standin_setting(tmp_path / "squeezenet_photo96")
    assert claims.ablation_settings(root).splitlines() == [
        "ft_epochs=2", "ft_lr=0.01", "ft_batch_size=128", "ft_alpha=0.078125", "ft_beta=3"]
    for s in range(3):    # without +All: beta from +Space, alpha from the config
        (root / f"seed{s}" / "all" / "args.json").unlink()
    assert claims.ablation_settings(root).splitlines()[-2:] == ["ft_alpha=0.078125",
                                                               "ft_beta=3"]


# -- the driver ------------------------------------------------------------------------------
def run_driver(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    """reproduce_claims.sh with a stub python that logs its calls and answers the ablation
    settings query."""
    log = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n'
                    'if [ "$1" = -c ]; then printf "ft_epochs=4\\nft_lr=0.01\\n'
                    'ft_batch_size=128\\nft_alpha=0.078125\\nft_beta=3\\n"; fi\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "reproduce_claims.sh")],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHON": str(stub), **env})
    return done, (log.read_text().splitlines() if log.is_file() else [])


def test_the_driver_runs_the_stand_in_then_its_ablations_in_its_seed_folders(tmp_path):
    done, calls = run_driver(tmp_path, models="none", standin_models="squeezenet",
                             ablations="expansion depth", standin_seeds="3,1,2")
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1 + 1 + 3 * 2 + 1   # ablations on the first 3 seeds (the default)
    bench, query, *ablation, report_call = calls
    out = "output/claims/squeezenet_photo96"
    for flag in ("--model_name squeezenet", "--decoy_kind photo", "--correlation 0",
                 "--image_size 96", "--train_per_class 300", "--seeds 3,1,2",
                 "--train_epochs 60", "--test_per_class 300", "--expand_px 13",
                 "--batch_size 32 --lr 0.01",   # the released recipe's batch at 96 px
                 "--variants control,space,all", f"--out_dir {out}"):
        assert flag in bench
    assert query.startswith("-c ") and query.endswith(out)
    common = ("--data_name photo_fashion_mnist96 --data_dir "
              "data/shortcut_fashion_mnist_photo0_96px_300_test300")
    expected = {("expansion", 3): "--settings 0,2,4,9,13,17 --variants space",
                ("depth", 3): "--settings 0,1,2,3 --variants channel,space,all",
                ("expansion", 1): "--settings 0,2,4,9,13,17 --variants space",
                ("depth", 1): "--settings 0,1,2,3 --variants channel,space,all",
                ("expansion", 2): "--settings 0,2,4,9,13,17 --variants space",
                ("depth", 2): "--settings 0,1,2,3 --variants channel,space,all"}
    for call, ((study, seed), flags) in zip(ablation, expected.items()):
        seed_dir = f"{out}/seed{seed}"
        assert call.startswith(f"-m scripts.ablation {study} --exp_dir {seed_dir} "
                               f"--ori_model_path {seed_dir}/decoy/models/last.pth "
                               f"--model_name squeezenet {common} {flags}")
        for flag in ("--num_epochs 4 --lr 0.01 --batch_size 128 --alpha 0.078125 --beta 3 "
                     "--expand_px 13", f"--seed {seed}", f"--work_dir {seed_dir}/ablation "
                     f"--out_dir {seed_dir}/ablation"):
            assert flag in call
    # no Fashion-MNIST setting, so no Fig. 3; the report reads the stand-in
    assert report_call.startswith(f"-m scripts.claims --runs {out} --acc_tol")
    # report_only: the report alone
    (tmp_path / "b").mkdir()
    done, calls = run_driver(tmp_path / "b", standin_models="squeezenet", report_only="1",
                             fig3="0")
    assert done.returncode == 0 and len(calls) == 1
    assert calls[0].startswith(f"-m scripts.claims --runs output/claims/smallcnn_fmnist {out} ")


@pytest.mark.parametrize("env, message", [
    ({"ablations": "annotations table9"},
     "ablations: unknown 'table9' (valid: annotations expansion depth)"),
    ({"ablation_seeds": "0,7"}, "ablation_seeds: 7 is not one of standin_seeds (0,1,2,3)"),
    ({"standin_claims": "space mixup"}, "standin_claims: unknown 'mixup' (valid: channel "
                                        "space all)"),
])
def test_the_driver_refuses_a_bad_ablation_setting_in_one_line(tmp_path, env, message):
    done, calls = run_driver(tmp_path, standin_models="squeezenet", **env)
    assert done.returncode == 2 and not calls
    assert done.stderr.strip() == f"reproduce_claims.sh: error: {message}"


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_driver_end_to_end_on_a_tiny_stand_in_with_one_ablation(tmp_path):
    """reproduce_claims.sh for real on tiny Fashion-MNIST-format files: the 96 px stand-in
    (2 seeds), Table 3 on both, the report. It runs in a folder that links the code, so its
    data/, output/ and RESULTS.md stay there; the python wrapper only adds --no_verify (the
    tiny files have no official counts)."""
    from tests.test_shortcut_benchmark import write_idx
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"data", "output", "results", "RESULTS.md", ".git"}:
            (repo / entry.name).symlink_to(entry)
    write_idx(repo / "data" / "raw" / "fashion_mnist", per_class=6, size=28)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nif [ "$2" = scripts.shortcut_benchmark ]; then\n'
                      f'  exec {sys.executable} "$@" --no_verify\nfi\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {"PYTHON": str(python), "OMP_NUM_THREADS": "1", "models": "none",
           "standin_models": "smallcnn", "standin_per_class": "4", "val_per_class": "1",
           "standin_seeds": "0,1", "standin_epochs": "2", "doctor_epochs": "1", "budget": "2",
           "betas": "1", "ablations": "expansion", "expansions": "0,2", "fig3": "0",
           "acc_tol": "100", "loss_tol": "100", "results_file": "RESULTS.md",
           "figures_dir": "figs", "results_root": "results"}
    done = subprocess.run(["bash", str(repo / "scripts" / "reproduce_claims.sh")],
                          capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    out = repo / "output" / "claims" / "smallcnn_photo96"
    table = json.loads((out / "seed1" / "ablation" / "ablation_expansion.json").read_text())
    assert [(r["setting"], r["run"]) for r in table["rows"]] == [
        (0, "expansion/space_px0"), (2, "expansion/space_px2")]
    assert (out / "seed1" / "ablation" / "expansion" / "space_px2" / "models" /
            "epochs.jsonl").is_file()
    written = (repo / "RESULTS.md").read_text()
    name = "Table 1, STL-10 stand-in (96 px Fashion-MNIST on photographs)"
    for label in ("+Space", "+All"):   # smallcnn: the median of the paper's STL-10 column
        row = written.split(f"| {name}, {label} (smallcnn) | final epoch | ")[1].split("\n")[0]
        # (a tiny run's treatment may leave the control's accuracies: the row says so)
        assert "(paper's median over its 16 networks) |" in row
        assert re.search(r"n = 2( \(identical to the control at every epoch\))? \|", row)
    claim = "| Table 3, STL-10 stand-in, +Space, mask expanded 2 px (smallcnn) | final epoch | "
    assert claim + "+0.43 (paper, vgg16 mnin, Table 3: 5 px at 224 px) |" in written
    assert written.split(claim)[1].split("|")[1].strip().endswith("n = 2")
    assert "| Table 2: gain vs annotated images per class | – | – | – | not run" in written
    assert not (ROOT / "output" / "claims" / "smallcnn_photo96").exists()


def test_a_missing_paper_ablations_file_is_one_error_line(tmp_path, capsys):
    root = standin_setting(tmp_path / "s")
    args = claims.get_args_parser().parse_args(
        ["--runs", str(root), "--paper_ablations", str(tmp_path / "none.csv")])
    with pytest.raises(SystemExit) as exc:
        claims.main(args, [])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert err[-1] == ("python -m scripts.claims: error: --paper_ablations: "
                       f"{tmp_path / 'none.csv'} not found")
