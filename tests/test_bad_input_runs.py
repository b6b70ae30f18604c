"""Runs that must be refused, or must not lie: resume with other settings, a finished run, a
busy or stale folder, a killed run's leftovers, outputs that would replace inputs, and a
treatment written into another run's folder."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import test as test_script
import train
import train_model_doctor
from core import engine
from core.config import DoctorConfig
from fakedata import make_image_folder
from utils.run import LOCK_NAME, RunRecorder

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--model_name", "smallcnn", "--data_name", "digits", "--workers", "0",
          "--no_progress", "--device", "cpu", "--batch_size", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), num_classes=3, per_class=6)


def train_run(data, out, *extra, epochs="1"):
    return train.main(train.get_args_parser().parse_args(
        COMMON + ["--data_dir", str(data), "--model_dir", str(out), "--num_epochs", epochs,
                  *extra]))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished one-epoch run (never modified by the tests)."""
    out = tmp_path_factory.mktemp("trained") / "models"
    train_run(data, out)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- resume that never lies -------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,shown", [("--lr", "0.02", "lr 0.01 -> 0.02"),
                                              ("--seed", "3", "seed 0 -> 3"),
                                              ("--num_epochs", "2", "num_epochs 1 -> 2")])
def test_resume_with_other_settings_is_refused_naming_them(data, trained, tmp_path, flag,
                                                           value, shown):
    run = copy_run(trained, tmp_path / "run")
    before = snapshot(run)
    argv = [*(["--num_epochs", "1"] if flag != "--num_epochs" else []), flag, value, "--resume"]
    with pytest.raises(ValueError) as err:
        train.main(train.get_args_parser().parse_args(
            COMMON + ["--data_dir", str(data), "--model_dir", str(run), *argv]))
    message = str(err.value)
    assert shown in message and "another --model_dir or delete" in message
    assert "\n" not in message
    assert snapshot(run) == before        # args.json not rewritten, nothing else touched


def test_resume_of_a_finished_run_reports_it(data, trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "run")
    before = snapshot(run)
    result = train_run(data, run, "--resume", "--workers", "0")
    assert "finished run with these settings" in capsys.readouterr().out
    assert result == json.loads((trained / "result.json").read_text())
    assert snapshot(run) == before


def test_resume_onto_weights_only_or_another_architecture_is_one_line(data, trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    (run / "last.pth").write_bytes((run / "model_ori.pth").read_bytes())   # weights only
    with pytest.raises(ValueError, match="is not a training state .*another --model_dir"):
        train_run(data, run, "--resume")
    run = copy_run(trained, tmp_path / "run2")
    with pytest.raises(ValueError, match="model_name 'smallcnn' -> 'alexnet'"):
        train.main(train.get_args_parser().parse_args(
            [*COMMON[:1], "alexnet", *COMMON[2:], "--data_dir", str(data), "--model_dir",
             str(run), "--num_epochs", "1", "--resume"]))


def test_key_is_recorded_in_args_result_and_state(trained):
    from utils import load_checkpoint
    key = json.loads((trained / "args.json").read_text())["key"]
    assert json.loads((trained / "result.json").read_text())["key"] == key
    assert load_checkpoint(trained / "last.pth")["key"] == key


# -- lock, leftovers, TensorBoard -------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_into_a_busy_folder_is_refused(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid,
                                                 "host": socket.gethostname()}))
        with pytest.raises(ValueError, match=f"in use by another run \\(pid {holder.pid}"):
            train_run(data, out)
        assert not (out / "last.pth").exists()
        assert (out / LOCK_NAME).is_file()         # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_leftovers_removed(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    leftover = out / ".last.pth.x1y2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train_run(data, out)
    printed = capsys.readouterr().out
    assert "taking over the stale lock" in printed and f"removed {leftover}" in printed
    assert not leftover.exists() and not (out / LOCK_NAME).exists()
    assert (out / "result.json").is_file()


def scalar_steps(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_purge_step_drops_the_steps_after_the_checkpoint(tmp_path):
    first = RunRecorder(tmp_path)
    for step in (1, 2, 3):
        first.log_epoch(step, {"x": float(step)})
    first.close()
    second = RunRecorder(tmp_path, purge_step=2)     # resumed from the checkpoint of step 1
    for step in (2, 3):
        second.log_epoch(step, {"x": 10.0 * step})
    second.close()
    assert scalar_steps(tmp_path, "x") == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_resume_purges_from_the_epoch_after_the_checkpoint(data, tmp_path, monkeypatch,
                                                         interrupt_at_epoch):
    out = tmp_path / "run"
    interrupt_at_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        train_run(data, out, epochs="2")
    interrupt_at_epoch(None)
    seen = []

    class Spy(RunRecorder):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("purge_step"))
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(engine, "RunRecorder", Spy)
    train_run(data, out, "--resume", epochs="2")
    assert seen == [2]
    steps = [s for s, _ in scalar_steps(out, "test/top1")]
    assert steps == [1, 2]


# -- outputs that would replace inputs or other runs -----------------------------------------
def test_test_py_refuses_result_path_equal_to_model_path_before_evaluating(
        data, trained, tmp_path, monkeypatch):
    model = tmp_path / "model.pth"
    model.write_bytes((trained / "model_ori.pth").read_bytes())
    before = model.read_bytes()

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before refusing")
    monkeypatch.setattr(engine, "evaluate", no_evaluation)
    parse = test_script.get_args_parser().parse_args
    argv = COMMON + ["--data_dir", str(data), "--model_path", str(model)]
    with pytest.raises(ValueError, match="--result_path .* is --model_path"):
        test_script.main(parse(argv + ["--result_path", str(model)]))
    with pytest.raises(IsADirectoryError, match="--result_path .* is a folder"):
        test_script.main(parse(argv + ["--result_path", str(tmp_path)]))
    assert model.read_bytes() == before


def test_test_py_refusal_is_one_line(data, trained, tmp_path):
    model = trained / "model_ori.pth"
    proc = subprocess.run([sys.executable, "test.py", *COMMON, "--data_dir", str(data),
                           "--model_path", str(model), "--result_path", str(model)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"test.py: error: --result_path {model} is --model_path: the results would replace "
        "the model; name another file"]


def test_model_dir_that_is_a_file_is_refused_before_any_work(data, tmp_path, monkeypatch):
    target = tmp_path / "models"
    target.write_text("not a folder")
    monkeypatch.setattr(engine.loaders, "build_dataset", lambda *a, **k: pytest.fail("work"))
    with pytest.raises(NotADirectoryError, match="--model_dir .* is a file, not a folder"):
        train_run(data, target)


def test_released_res_model_path_keeps_the_original_run_byte_identical(data, tmp_path):
    models_dir = tmp_path / "EXP" / "models"
    train_run(data, models_dir)
    before = snapshot(models_dir)
    argv = COMMON + ["--data_dir", str(data), "--ori_model_path",
                     str(models_dir / "model_ori.pth"), "--res_model_path",
                     str(models_dir / "model_optim.pth"), "--alpha", "0", "--beta", "0",
                     "--num_epochs", "1"]
    parse = train_model_doctor.get_args_parser().parse_args
    result = train_model_doctor.main(parse(argv))
    after = snapshot(models_dir)
    assert {k: after[k] for k in before} == before     # the training's files, byte for byte
    assert (models_dir / "model_optim.pth").is_file()
    records = models_dir / "model_optim"
    assert json.loads((records / "result.json").read_text()) == result
    assert {"last.pth", "args.json", "epochs.jsonl"} <= {p.name for p in records.iterdir()}
    recorded = json.loads((records / "args.json").read_text())
    assert recorded["res_model_path"] == str(models_dir / "model_optim.pth")
    # the same command again goes to the same place and resumes its own state
    assert train_model_doctor.main(parse(argv + ["--resume"])) == result
    assert {k: snapshot(models_dir)[k] for k in before} == before


# -- variants through the shell script ---------------------------------------------------------
def run_variant_script(tmp_path, **env):
    """train_model_doctor.sh with a stub interpreter that records the training call's argv
    (``python -m scripts.*`` still runs)."""
    record = tmp_path / "argv.json"
    stub = tmp_path / "python"
    stub.write_text(f"""#!/usr/bin/env bash
if [ "$1" = -m ]; then exec {sys.executable} "$@"; fi
exec {sys.executable} -c 'import json, sys; json.dump(sys.argv[1:], open("{record}", "w"))' "$@"
""")
    stub.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    proc = subprocess.run(["bash", "scripts/train_model_doctor.sh"], cwd=ROOT, text=True,
                          capture_output=True, timeout=120,
                          env={**base, "PYTHON": str(stub), "result_path": str(tmp_path),
                               "data_name": "decoy_digits", **env})
    argv = json.loads(record.read_text()) if record.is_file() else None
    return proc, argv


def test_variant_space_trains_the_spatial_constraint_only(tmp_path):
    proc, argv = run_variant_script(tmp_path, variant="space")
    assert proc.returncode == 0, proc.stderr
    assert argv[0] == "train_model_doctor.py"
    cfg = DoctorConfig.parse(argv[1:])
    assert cfg.alpha == 0 and cfg.beta > 0 and cfg.gamma == 0
    assert cfg.res_model_path.endswith("space/models/model_doctor.pth")


@pytest.mark.parametrize("variant,weights", [("channel", {}), ("all", {}),
                                             ("kernels_reinit_deep", {"gamma": "0.3"})])
def test_each_variant_sets_its_weights(tmp_path, variant, weights):
    proc, argv = run_variant_script(tmp_path, variant=variant, **weights)
    assert proc.returncode == 0, proc.stderr
    cfg = DoctorConfig.parse(argv[1:])
    assert (cfg.alpha > 0, cfg.beta > 0, cfg.gamma > 0) == {
        "channel": (True, False, False), "all": (True, True, False),
        "kernels_reinit_deep": (False, False, True)}[variant]
    if variant == "kernels_reinit_deep":
        assert cfg.kernel_reinit and cfg.kernel_layers == "-1,-2"


def test_a_variant_contradicted_by_a_weight_is_refused(tmp_path):
    proc, argv = run_variant_script(tmp_path, variant="space", alpha="0.078")
    assert proc.returncode != 0 and argv is None
    assert "variant=space uses beta, but alpha=0.078" in proc.stderr


def test_table1_reuse_check_sees_the_settings_the_script_trains(tmp_path):
    """scripts/table1.py decides "finished" from the config the script would build: the same
    key as the argv train_model_doctor.sh really passes."""
    from scripts.table1 import script_config
    env = {"model_name": "smallcnn", "data_name": "decoy_digits", "seed": "2",
           "exp_name": "cell", "data_dir": str(tmp_path / "data"), "variant": "space",
           "alpha": "0.0", "beta": "1.0", "num_epochs": "3", "expand_px": "2",
           "ori_model_path": str(tmp_path / "m.pth"), "grad_dir": str(tmp_path / "g"),
           "mask_dir": str(tmp_path / "masks"),
           "res_model_path": str(tmp_path / "cell" / "space" / "models" / "model_doctor.pth"),
           "log_dir": str(tmp_path / "runs")}
    proc, argv = run_variant_script(tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert DoctorConfig.parse(argv[1:]).key() == script_config(DoctorConfig, env).key()
    assert script_config(DoctorConfig, {**env, "seed": "3"}).key() != \
        DoctorConfig.parse(argv[1:]).key()
