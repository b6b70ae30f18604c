"""Command-line behaviour shared by every entry point: help texts and one-line user errors."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import test as test_script
import train
import train_model_doctor
from core import diagnose, grad_calculate, image_sift, robustness
from utils.cli import TRACEBACK_ENV, HelpFormatter, run_main

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"train.py": train, "test.py": test_script, "train_model_doctor.py": train_model_doctor,
           "core/image_sift.py": image_sift, "core/grad_calculate.py": grad_calculate,
           "core/diagnose.py": diagnose, "core/robustness.py": robustness}


def flag_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each flag's help as ``--help`` renders it (with the formatter's default note)."""
    formatter = parser._get_formatter()
    return {action.option_strings[0]: formatter._expand_help(action)
            for action in parser._actions if not isinstance(action, argparse._HelpAction)}


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_every_flag_has_help_with_its_default_once(script):
    parser = PARSERS[script].get_args_parser()
    assert parser.formatter_class is HelpFormatter
    helps = flag_help(parser)
    assert len(helps) > 5
    for flag, text in helps.items():
        words = text.replace("(default:", "").strip(" .;,")
        assert len(words) > 5, f"{script} {flag}: no help text ({text!r})"
        assert text.count("default:") == 1, f"{script} {flag}: {text!r}"
    parser.format_help()   # renders without a formatting error


def test_formatter_keeps_a_default_written_in_words():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", type=int, default=3, help="a number")
    p.add_argument("--b", default=None, help="channels (default: the dataset's)")
    p.add_argument("--c", action="store_true", help="a switch")
    helps = flag_help(p)
    assert helps == {"--a": "a number (default: 3)", "--b": "channels (default: the dataset's)",
                     "--c": "a switch (default: False)"}


def _main_raising(exc):
    def main(args):
        raise exc
    return main


def test_run_main_turns_user_errors_into_one_line(monkeypatch, capsys):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    parser = argparse.ArgumentParser(prog="tool.py")
    with pytest.raises(SystemExit) as stop:
        run_main(_main_raising(FileNotFoundError("data folder not found: x\n  (really)")),
                 parser, [])
    assert stop.value.code == 1
    assert capsys.readouterr().err == "tool.py: error: data folder not found: x (really)\n"
    with pytest.raises(SystemExit) as stop:   # KeyError's str() would add quotes
        run_main(_main_raising(KeyError("unknown model 'x'")), parser, [])
    assert stop.value.code == 1 and capsys.readouterr().err == "tool.py: error: unknown model 'x'\n"
    with pytest.raises(SystemExit) as stop:
        run_main(lambda args: 3, parser, [])
    assert stop.value.code == 3
    with pytest.raises(SystemExit) as stop:   # a dict or True returned by main is not a status
        run_main(lambda args: True, parser, [])
    assert stop.value.code == 0
    with pytest.raises(ZeroDivisionError):    # a bug keeps its traceback
        run_main(_main_raising(ZeroDivisionError("bug")), parser, [])
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="bad value"):
        run_main(_main_raising(ValueError("bad value")), parser, [])
    assert TRACEBACK_ENV in parser.epilog


def _run(args, **env):
    full = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**full, **env}, text=True,
                          capture_output=True, timeout=300)


@pytest.mark.e2e
def test_missing_data_folder_is_one_line_and_the_variable_brings_the_traceback(tmp_path):
    missing = tmp_path / "no_such_data"
    args = ["train.py", "--model_name", "smallcnn", "--data_name", "digits",
            "--data_dir", str(missing), "--model_dir", str(tmp_path / "m"), "--device", "cpu"]
    proc = _run(args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"train.py: error: data folder not found: {missing}"], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "m").exists()
    proc = _run(args, **{TRACEBACK_ENV: "1"})
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert f"FileNotFoundError: data folder not found: {missing}" in proc.stderr


@pytest.mark.e2e
def test_bad_flag_value_in_a_core_script_is_one_line(tmp_path):
    proc = _run(["core/image_sift.py", "--data_path", str(tmp_path / "nothing"),
                 "--model_path", str(tmp_path / "m.pth"), "--device", "cpu"])
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("image_sift.py: error: ")
    proc = _run(["train_model_doctor.py", "--res_model_path", str(tmp_path), "--device", "cpu"])
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--res_model_path" in proc.stderr and "model_doctor.pth" in proc.stderr
