"""The typed run descriptions (core/config.py): round trip through the flags, the key, the one
reuse check, and entry points that never import each other."""
import ast
import dataclasses
import json
from pathlib import Path

import pytest

from core import config
from core.config import DoctorConfig, TestConfig, TrainConfig, changed_settings, finished

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINTS = {"train", "test", "train_model_doctor"}
CONFIGS = [(TrainConfig, config.train_parser), (DoctorConfig, config.doctor_parser),
           (TestConfig, config.test_parser)]
# a value other than the default for each kind of field
OTHER = {bool: True, int: 7, float: 0.123, str: "x"}


def other_value(cfg, field, parser):
    action = next(a for a in parser()._actions if a.dest == field.name)
    if action.choices:
        return next(c for c in action.choices if c != getattr(cfg, field.name))
    current = getattr(cfg, field.name)
    if field.name.endswith("layers"):
        return "-1,-2" if current != "-1,-2" else "0"
    if field.name in ("device_index",):
        return "1"
    kind = type(current) if current is not None else (
        action.type if action.type in (int, float) else str)
    value = OTHER[kind]
    return value if value != current else (not value if kind is bool else value * 2)


@pytest.mark.parametrize("cls,parser", CONFIGS)
def test_fields_are_the_parsers_flags(cls, parser):
    dests = {a.dest for a in parser()._actions if a.dest != "help"}
    assert {f.name for f in dataclasses.fields(cls)} == dests


@pytest.mark.parametrize("cls,parser", CONFIGS)
def test_round_trip_of_every_field(cls, parser):
    base = cls.parse([])
    assert cls.parse(base.to_argv()) == base
    for field in dataclasses.fields(cls):
        changed = base.replace(**{field.name: other_value(base, field, parser)})
        assert changed != base, field.name
        assert cls.parse(changed.to_argv()) == changed, field.name


@pytest.mark.parametrize("cls,parser", CONFIGS)
def test_key_sees_every_result_setting_and_no_output_setting(cls, parser):
    base = cls.parse([])
    assert base.key() == cls.parse([]).key() and len(base.key()) == 16
    outputs = {"model_dir", "log_dir", "res_model_path", "result_path", "workers", "no_progress",
               "device", "device_index", "resume", "allow_foreign_stats"}
    for field in dataclasses.fields(cls):
        changed = base.replace(**{field.name: other_value(base, field, parser)})
        if field.name in outputs:
            assert changed.key() == base.key(), field.name
        else:
            assert changed.key() != base.key(), field.name


def test_key_is_stable_across_processes_and_spellings(tmp_path, monkeypatch):
    cfg = DoctorConfig.parse(["--lr", "0.02", "--data_dir", "data/x"])
    # the same data named from another working folder is the same run
    monkeypatch.chdir(tmp_path)
    moved = DoctorConfig.parse(["--lr=0.020", "--data_dir", str(REPO / "data/x")])
    monkeypatch.chdir(REPO)
    assert cfg.key() == moved.key()
    # the stages never share a key
    assert TrainConfig.parse([]).key() != DoctorConfig.parse([]).key()


def test_finished_reads_the_key_of_result_json(tmp_path):
    cfg = DoctorConfig.parse(["--model_dir", str(tmp_path), "--gamma", "0.3", "--seed", "1"])
    assert not finished(tmp_path, cfg)
    (tmp_path / "result.json").write_text(json.dumps({"best_acc": 0.5, "key": cfg.key()}))
    assert finished(tmp_path, cfg)
    assert finished(tmp_path, cfg.replace(model_dir="elsewhere", workers=9))
    assert not finished(tmp_path, cfg.replace(gamma=1.0))
    assert not finished(tmp_path, cfg.replace(seed=2))
    assert not finished(tmp_path, cfg.replace(kernel_reinit=True))
    (tmp_path / "result.json").write_text(json.dumps({"best_acc": 0.5}))   # no key: not ours
    assert not finished(tmp_path, cfg)


def test_changed_settings_names_each_difference():
    cfg = TrainConfig.parse([])
    assert changed_settings(cfg.settings(), cfg) == []
    text = changed_settings(cfg.settings(), cfg.replace(lr=0.02, num_epochs=3))
    assert text == ["lr 0.01 -> 0.02", "num_epochs 200 -> 3"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def test_no_module_imports_an_entry_point():
    sources = [p for p in REPO.rglob("*.py")
               if not {".venv", "tests", ".git"} & set(p.relative_to(REPO).parts)]
    assert len(sources) > 30
    offenders = {str(p.relative_to(REPO)): sorted(imported_modules(p) & ENTRY_POINTS)
                 for p in sources}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_scan_sees_an_entry_point_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom train import fit\nimportlib.import_module('test')\n")
    assert imported_modules(probe) & ENTRY_POINTS == {"train", "test"}


def test_a_setting_added_later_keeps_earlier_runs_keys():
    """``swap_lambda`` came after runs were recorded: at 0 (off, what they used) it is not in
    the key's settings, so those runs' keys stay valid; any other value is."""
    from core.config import ADDED_LATER
    base = DoctorConfig.parse([])
    assert set(ADDED_LATER) <= {f.name for f in dataclasses.fields(DoctorConfig)}
    assert not set(ADDED_LATER) & set(base.settings())
    on = DoctorConfig.parse(["--swap_lambda", "1"])
    assert on.settings()["swap_lambda"] == 1.0 and on.key() != base.key()


def test_swap_lambda_help_names_both_ways_of_drawing_its_images():
    """The swap term runs without replay (``--swap_batch`` images from all annotated ones) or
    with it; the help must not say replay is needed."""
    from core.config import doctor_parser
    text = {a.dest: a.help for a in doctor_parser()._actions}["swap_lambda"]
    assert "--mask_dir" in text and "--swap_batch" in text and "--replay_annotated" in text
    assert "needs --replay_annotated" not in text
