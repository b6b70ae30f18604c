"""scripts/table1.py: the paper's numbers, the resumable grid driver, and the aggregation."""
import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import loaders
import models
from fakedata import make_image_folder
from scripts import table1



def run_driver(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = table1.main(table1.get_args_parser().parse_args([str(a) for a in argv]))
    return rc, out.getvalue()


def read_table(out_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    """``{(model title or previous, row label): {dataset: text}}`` from table1.csv."""
    table, model = {}, None
    with open(out_dir / "table1.csv", newline="") as f:
        for r in csv.DictReader(f):
            model = r.pop("model") or model
            table[(model, r.pop("row"))] = r
    return table


def test_paper_csv_complete():
    paper = table1.read_paper()
    assert len(paper) == 16 * 7
    assert {m for m, _ in paper} == set(table1.PAPER_MODELS) <= set(models.MODELS)
    assert {d for _, d in paper} == set(table1.PAPER_DATASETS) <= set(loaders.DATASETS)
    assert "resnet34" not in table1.PAPER_MODELS  # named in the text, absent from Table 1
    for (model, data), v in paper.items():
        assert 0 <= v["base"] <= 100 and v["space"] is not None and v["channel"] is not None
        assert all(abs(v[k]) <= 100 for k in ("space", "channel"))
        # "+All" only on the regular-size datasets
        assert (v["all"] is not None) == (data in ("stl10", "mnin")), (model, data)
    assert paper[("vgg16", "mnin")] == {"base": 83.00, "all": 5.92, "space": 5.58, "channel": 5.50}
    assert paper[("mnasnet", "cifar100")] == {"base": 53.60, "all": None, "space": -3.90,
                                              "channel": 0.50}


def fake_cell(root, model, data, seed, base, finals=None, masks=False, epochs=None):
    """Hand-made outputs of one cell: train result.json, variant result.json (final_acc)."""
    d = table1.CellDirs(root, table1.Cell(model, data, seed))
    d.models.mkdir(parents=True)
    (d.models / "result.json").write_text(json.dumps({"best_acc": base, "final_acc": base}))
    for variant, acc in (finals or {}).items():
        d.variant(variant).mkdir(parents=True)
        (d.variant(variant) / "result.json").write_text(
            json.dumps({"best_acc": max(acc, base), "final_acc": acc, "epoch0_acc": base}))
    for variant, accs in (epochs or {}).items():
        d.runs(variant).mkdir(parents=True)
        (d.runs(variant) / "epochs.jsonl").write_text("".join(
            json.dumps({"epoch": e, "test/top1": a}) + "\n" for e, a in enumerate(accs)))
    if masks:
        d.masks.mkdir(parents=True)
        (d.masks / "m.png").write_bytes(b"x")


def test_aggregation_against_hand_computed(tmp_path):
    root = tmp_path / "out"
    # base 90 / 92 / 94 -> 92.00 ± 2.00; channel gains +1 / +1 / +2 -> +1.33 ± 0.58;
    # control on two seeds only: -1 / +3 -> +1.00 ± 2.83 (n=2)
    fake_cell(root, "vgg16", "cifar10", 0, 0.90, {"channel": 0.91, "control": 0.89})
    fake_cell(root, "vgg16", "cifar10", 1, 0.92, {"channel": 0.93, "control": 0.95})
    fake_cell(root, "vgg16", "cifar10", 2, 0.94, {"channel": 0.96})
    # stl10: one seed with masks, all four variants; best_treated read from epochs.jsonl
    fake_cell(root, "vgg16", "stl10", 0, 0.80,
              {"control": 0.80, "channel": 0.81, "space": 0.79, "all": 0.825}, masks=True,
              epochs={"all": [0.80, 0.84, 0.825]})
    make_image_folder(tmp_path / "data" / "svhn", per_class=1)  # prepared, never run
    rc, log = run_driver("--models", "vgg16", "--datasets", "cifar10 stl10,svhn", "mnist",
                         "--seeds", "0", "1", "2", "--result_root", root,
                         "--data_root", tmp_path / "data", "--out_dir", tmp_path / "res",
                         "--report_only")
    assert rc == 0 and "run " not in log
    t = read_table(tmp_path / "res")
    assert t[("VGG-16", "base / +All")]["cifar10"] == "92.00 ± 2.00 / n/a (no masks)"
    assert t[("VGG-16", "+Space / +Channel")]["cifar10"] == "n/a (no masks) / +1.33 ± 0.58"
    assert t[("VGG-16", "fine-tune control")]["cifar10"] == "+1.00 ± 2.83 (n=2)"
    assert t[("VGG-16", "paper: base / +All")]["cifar10"] == "93.46 / –"
    assert t[("VGG-16", "paper: +Space / +Channel")]["cifar10"] == "-2.52 / +0.74"
    assert t[("VGG-16", "base / +All")]["stl10"] == "80.00 (n=1) / +2.50 (n=1)"
    assert t[("VGG-16", "+Space / +Channel")]["stl10"] == "-1.00 (n=1) / +1.00 (n=1)"
    assert t[("VGG-16", "paper: base / +All")]["stl10"] == "77.65 / +0.79"
    assert t[("VGG-16", "base / +All")]["svhn"] == "–"  # not run
    assert t[("VGG-16", "+Space / +Channel")]["mnist"] == "missing data"
    with open(tmp_path / "res" / "table1_long.csv", newline="") as f:
        rec = {r["data_name"]: r for r in csv.DictReader(f)}
    assert float(rec["cifar10"]["channel_mean"]) == pytest.approx(4 / 3, abs=1e-4)
    assert float(rec["cifar10"]["channel_std"]) == pytest.approx(3 ** -0.5, abs=1e-4)
    assert rec["cifar10"]["control_n"] == "2" and rec["svhn"]["base_n"] == "0"
    assert rec["mnist"]["status"] == "missing data" and rec["cifar10"]["status"] == "missing data"
    assert (tmp_path / "res" / "table1.md").read_text().count("| VGG-16 |") == 1

    run_driver("--models", "vgg16", "--datasets", "stl10", "--seeds", "0", "--result_root", root,
               "--out_dir", tmp_path / "best", "--report_only", "--metric", "best_treated")
    assert read_table(tmp_path / "best")[("VGG-16", "base / +All")]["stl10"] == "80.00 / +4.00"


def test_dry_run_and_bad_names(tmp_path):
    make_image_folder(tmp_path / "data" / "digits", per_class=2)
    make_image_folder(tmp_path / "data" / "decoy_digits", per_class=2, masks=True)
    rc, log = run_driver("--models", "smallcnn", "--datasets", "digits", "decoy_digits", "cifar10",
                         "--seeds", "0", "--data_root", tmp_path / "data",
                         "--result_root", tmp_path / "out", "--out_dir", tmp_path / "res",
                         "--dry_run")
    assert rc == 0 and "smallcnn_digits_s0: run train:" in log and "s0: run channel:" in log
    # no annotation, no ground truth: no +Space / +All
    assert "smallcnn_digits_s0: no masks in" in log and "smallcnn_digits_s0: run space" not in log
    # ground-truth masks: the annotation is simulated as in the quickstart
    for step in ("simulated annotation", "masks", "space", "all"):
        assert f"smallcnn_decoy_digits_s0: run {step}:" in log
    assert "data_name=cifar10 download=1" in log and "cells are skipped" in log
    assert not (tmp_path / "out").exists() and not (tmp_path / "res").exists()
    with pytest.raises(SystemExit, match="unknown model"):
        run_driver("--models", "vgg17", "--report_only")
    with pytest.raises(SystemExit, match="KEY=VAL"):
        run_driver("--extra_env", "workers", "--report_only", "--out_dir", tmp_path / "x")


@pytest.mark.e2e
def test_driver_tiny_grid_resumes(tmp_path):
    data_root = tmp_path / "data"
    make_image_folder(data_root / "digits", num_classes=3, per_class=6, size=32, channels=1)
    root, res = tmp_path / "out", tmp_path / "res"
    argv = ["--models", "smallcnn", "--datasets", "digits", "--seeds", "0",
            "--data_root", data_root, "--result_root", root, "--out_dir", res,
            "--train_epochs", "1", "--doctor_epochs", "1", "--num_high", "3", "--num_low", "2",
            "--extra_env", "workers=0", "--extra_env", "extra_args=--no_progress",
            "--extra_env",  # a class may have no correct image after one epoch
            "grad_calculate.extra_args=--no_progress --allow_empty_classes --no_figures",
            "--extra_env", "grad_calculate.noise_draws=2"]
    cell = table1.CellDirs(root, table1.Cell("smallcnn", "digits", 0))

    def expected(variant):
        base = json.loads((cell.models / "result.json").read_text())["best_acc"]
        result = cell.variant(variant) / "result.json"
        if variant == "base":
            return f"{100 * base:.2f}"
        return f"{100 * (json.loads(result.read_text())['final_acc'] - base):+.2f}"

    # 1. no annotation and no ground-truth masks: +Space / +All are n/a
    rc, log = run_driver(*argv)
    assert rc == 0, log
    for step in ("train", "sift high", "channel statistics", "sift low", "control", "channel"):
        assert f"smallcnn_digits_s0: run {step}:" in log
    assert "no masks in" in log and "run space" not in log
    t = read_table(res)
    assert t[("smallcnn", "base / +All")]["digits"] == f"{expected('base')} / n/a (no masks)"
    row = ("smallcnn", "+Space / +Channel")
    assert t[row]["digits"] == f"n/a (no masks) / {expected('channel')}"
    assert t[("smallcnn", "fine-tune control")]["digits"] == expected("control")
    assert t[("smallcnn", "paper: base / +All")]["digits"] == "– / –"

    # 2. annotations arrive (masks named after training images): only +Space and +All run;
    #    a dataset that is not prepared is reported, not fatal
    for k in range(3):
        (cell.masks / f"c{k}").mkdir(parents=True)
        mask = np.zeros((32, 32), np.uint8)
        mask[4:20, 4:20] = 255
        Image.fromarray(mask).save(cell.masks / f"c{k}" / "img0.png")
    done = [cell.models / "result.json",
            *(cell.variant(v) / "result.json" for v in ("control", "channel"))]
    mtimes = [p.stat().st_mtime_ns for p in done]
    rc, log = run_driver(*argv[:3], "digits", "cifar10", *argv[4:])
    assert rc == 0, log
    assert log.count("smallcnn_digits_s0: skip") == 6 and log.count(" run ") == 2, log
    assert "run space:" in log and "run all:" in log
    assert "cifar10: missing data" in log and "bash scripts/prepare_data.sh" in log
    t = read_table(res)
    assert t[("smallcnn", "base / +All")]["cifar10"] == "missing data"
    assert t[("smallcnn", "base / +All")]["digits"] == f"{expected('base')} / {expected('all')}"
    assert t[row]["digits"] == f"{expected('space')} / {expected('channel')}"

    # 3. everything done: every step skipped, nothing rewritten
    done += [cell.variant(v) / "result.json" for v in ("space", "all")]
    mtimes += [p.stat().st_mtime_ns for p in done[len(mtimes):]]
    rc, log = run_driver(*argv)
    assert rc == 0 and " run " not in log and log.count("skip") == 8, log
    assert [p.stat().st_mtime_ns for p in done] == mtimes

    # 4. report only
    (res / "table1.md").unlink()
    rc, log = run_driver(*argv[:12], "--report_only")
    assert rc == 0 and "skip" not in log and (res / "table1.md").is_file()
    t = read_table(res)
    assert t[("smallcnn", "base / +All")]["digits"] == f"{expected('base')} / {expected('all')}"
