"""Bad input refused before any work: flag values (utils/validate.py through run_main), the
shell scripts' name=value arguments (scripts/_args.sh), Ctrl-C, one default per setting, and
mini-ImageNet CSV paths that would leave images/."""
from __future__ import annotations

import argparse
import csv
import importlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from preprocessing import mini_imagenet, prepare_data
from preprocessing.common import CONVERTERS
from utils import validate
from utils.cli import INTERRUPTED_STATUS, TRACEBACK_ENV, run_main
from utils.runtime import get_device

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("[a-z]*.sh"))

# Every entry point with numeric flags: module -> the arguments it requires.
ENTRY_POINTS = {
    "train": [], "test": [], "train_model_doctor": [],
    "core.grad_calculate": [], "core.image_sift": [], "core.diagnose": [],
    "core.robustness": [],
    "preprocessing.prepare_data": ["--data_name", "digits", "--output", "o"],
    "preprocessing.synthetic_labelme": ["--image_dir", "i", "--gt_mask_dir", "g",
                                        "--json_dir", "j"],
    "models.__main__": [],
    "scripts.table1": [], "scripts.shortcut_benchmark": [], "scripts.benchmark": [],
    "scripts.ablation": ["depth", "--exp_dir", "e"],
    "scripts.figures": ["visual", "--original_model_path", "m.pth"],
}


def parser_of(module: str) -> argparse.ArgumentParser:
    parser = importlib.import_module(module).get_args_parser()
    parser.prog = module.rsplit(".", 1)[-1] + ".py"
    return parser


# (module, argv, flag): the probes of issue 22 and one case of every other kind of rule.
BAD_VALUES = [
    ("train", ["--lr", "nan"], "--lr"),
    ("train", ["--lr", "0"], "--lr"),
    ("train", ["--num_epochs", "0"], "--num_epochs"),
    ("train", ["--num_epochs", "-3"], "--num_epochs"),
    ("train", ["--batch_size", "0"], "--batch_size"),          # was: silently 128
    ("train", ["--batch_size", "-5"], "--batch_size"),         # was: __len__() should return >= 0
    ("train", ["--momentum", "nan"], "--momentum"),
    ("train", ["--weight_decay", "-1"], "--weight_decay"),
    ("train", ["--workers", "-1"], "--workers"),
    ("train", ["--device", "gpu"], "--device"),                # was: a raw traceback
    ("train", ["--device", "cuda:x"], "--device"),
    ("train", ["--device_index", "first"], "--device_index"),
    ("train_model_doctor", ["--alpha", "nan"], "--alpha"),     # was: treatment silently off
    ("train_model_doctor", ["--alpha", "-1"], "--alpha"),
    ("train_model_doctor", ["--beta", "-1"], "--beta"),
    ("train_model_doctor", ["--gamma", "-1"], "--gamma"),
    ("train_model_doctor", ["--lr", "nan"], "--lr"),           # was: a NaN model saved as best
    ("train_model_doctor", ["--rrr_lambda", "inf"], "--rrr_lambda"),
    ("train_model_doctor", ["--noise_draws", "0"], "--noise_draws"),
    ("train_model_doctor", ["--noise_draws", "-2"], "--noise_draws"),
    ("train_model_doctor", ["--noise_delta", "-0.5"], "--noise_delta"),
    ("train_model_doctor", ["--kernel_tau", "1"], "--kernel_tau"),
    ("train_model_doctor", ["--expand_px", "-1"], "--expand_px"),
    ("train_model_doctor", ["--replay_annotated", "-1"], "--replay_annotated"),
    ("train_model_doctor", ["--num_classes", "0"], "--num_classes"),
    ("train_model_doctor", ["--num_epochs", "-1"], "--num_epochs"),
    ("core.grad_calculate", ["--theta", "nan"], "--theta"),    # was: every mask zero
    ("core.grad_calculate", ["--theta", "2"], "--theta"),
    ("core.grad_calculate", ["--noise_draws", "0"], "--noise_draws"),
    ("core.grad_calculate", ["--noise_delta", "-0.5"], "--noise_delta"),  # was: noiseless
    ("core.grad_calculate", ["--seed", "-1"], "--seed"),
    ("core.image_sift", ["--num_images", "-1"], "--num_images"),  # was: all but one image
    ("core.image_sift", ["--num_images", "0"], "--num_images"),   # was: silently 20
    ("core.image_sift", ["--batch_size", "0"], "--batch_size"),
    ("test", ["--batch_size", "0"], "--batch_size"),
    ("test", ["--in_channels", "0"], "--in_channels"),
    ("core.diagnose", ["--num_overlays", "0"], "--num_overlays"),
    ("core.robustness", ["--num_images", "0"], "--num_images"),
    ("core.robustness", ["--repeats", "0"], "--repeats"),
    ("core.robustness", ["--eps=-1/255"], "--eps"),
    ("core.robustness", ["--deltas", "0,-0.1"], "--deltas"),
    ("preprocessing.prepare_data", ["--decoy_strength", "300"], "--decoy_strength"),
    ("preprocessing.prepare_data", ["--train_per_class", "0"], "--train_per_class"),
    ("preprocessing.synthetic_labelme", ["--per_class", "-1"], "--per_class"),
    ("models.__main__", ["--num_classes", "0"], "--num_classes"),
    ("scripts.table1", ["--train_epochs", "0"], "--train_epochs"),
    ("scripts.shortcut_benchmark", ["--lr", "-0.1"], "--lr"),
    ("scripts.benchmark", ["--reps", "0"], "--reps"),
    ("scripts.ablation", ["--theta", "1.5"], "--theta"),
    ("scripts.figures", ["--num_images", "0"], "--num_images"),
]


def _never_called(args):
    raise AssertionError("main ran despite a bad value")


@pytest.mark.parametrize("module,argv,flag", BAD_VALUES,
                         ids=[f"{m}{' '.join(a)}" for m, a, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_flag(module, argv, flag, capsys):
    parser = parser_of(module)
    with pytest.raises(SystemExit) as stop:
        run_main(_never_called, parser, ENTRY_POINTS[module] + argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"{parser.prog}: error: argument {flag}: "), err
    assert "must be " in err and ", got " in err and "Traceback" not in err, err


def test_message_gives_the_rule_and_the_value(capsys):
    parser = parser_of("train")
    with pytest.raises(SystemExit):
        run_main(_never_called, parser, ["--lr", "nan"])
    assert capsys.readouterr().err == \
        "train.py: error: argument --lr: must be a finite number > 0, got nan\n"
    with pytest.raises(SystemExit):
        run_main(_never_called, parser, ["--device", "gpu"])
    assert capsys.readouterr().err == ("train.py: error: argument --device: must be one of "
                                       "auto, cpu, cuda, cuda:N, mps, got gpu\n")


def test_argparse_own_errors_are_one_line_too(capsys):
    parser = parser_of("train")
    with pytest.raises(SystemExit) as stop:
        run_main(_never_called, parser, ["--num_epochs", "many"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err == "train.py: error: argument --num_epochs: invalid int value: 'many'\n"


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_numeric_flag_has_a_rule_and_the_defaults_pass(module):
    parser = parser_of(module)
    numeric = [a for a in validate.parser_actions(parser)
               if a.option_strings and a.type is not None
               and getattr(a.type, "__name__", "") in ("int", "float", "parse_number",
                                                        "parse_deltas")]
    assert numeric, module
    missing = sorted({validate.flag_name(a) for a in numeric
                      if validate.rule_for(parser, a.dest) is None})
    assert not missing, f"{module}: numeric flags without a value rule: {missing}"
    args = parser.parse_args(ENTRY_POINTS[module])
    assert validate.problems(parser, args) == []


def test_good_values_pass_and_none_means_unset():
    parser = parser_of("train_model_doctor")
    args = validate.parse_args(parser, ["--alpha", "0", "--beta", "0", "--lr", "1e-4",
                                        "--noise_delta", "0", "--expand_px", "0",
                                        "--kernel_tau", "0", "--device", "cuda:1",
                                        "--device_index", "0", "--batch_size", "1"])
    assert args.batch_size == 1 and args.alpha == 0.0
    assert validate.parse_args(parser, []).batch_size is None   # the dataset's default
    # 0 treatment epochs: epoch 0 evaluates and saves the trained model it starts from;
    # train.py starts from scratch, where 0 epochs would save nothing
    assert validate.parse_args(parser, ["--num_epochs", "0"]).num_epochs == 0
    assert validate.problems(parser_of("train"), parser_of("train").parse_args(
        ["--num_epochs", "0"])) == ["argument --num_epochs: must be an integer > 0, got 0"]
    rules = validate.RULES
    assert rules["theta"](0.999) is None and rules["theta"](1.0)
    assert rules["momentum"](1.0) is None and rules["momentum"](1.01)
    assert rules["alpha"](float("inf")) and rules["alpha"](float("nan")) and rules["alpha"](-0.1)
    assert rules["deltas"]([0.0, 0.5]) is None and rules["deltas"]([0.1, float("nan")])


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "CPU", "cuda:"])
def test_get_device_refuses_unknown_names_with_the_choices(device):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N, mps"):
        get_device(device)


def test_get_device_still_resolves_cpu_and_auto():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type in ("cpu", "cuda")


# ------------------------------------------------------------------ as the user runs them

def _run(args, **env):
    full = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**full, **env}, text=True,
                          capture_output=True, timeout=300)


@pytest.mark.parametrize("argv,line", [
    (["train.py", "--lr", "nan"], "train.py: error: argument --lr: must be a finite number > 0, "
                                  "got nan"),
    (["train_model_doctor.py", "--device", "gpu"],
     "train_model_doctor.py: error: argument --device: must be one of auto, cpu, cuda, cuda:N, "
     "mps, got gpu"),
    (["core/grad_calculate.py", "--theta", "2"],
     "grad_calculate.py: error: argument --theta: must be a number in [0, 1), got 2.0"),
])
def test_bad_value_from_the_command_line(argv, line, tmp_path):
    proc = _run(argv + ["--log_dir", str(tmp_path / "runs")] if argv[0] == "train.py" else argv)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [line]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []   # refused before anything was written


def test_ctrl_c_in_main_is_one_line_and_status_130(monkeypatch, capsys):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)

    def interrupted(args):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        run_main(interrupted, argparse.ArgumentParser(prog="tool.py"), [])
    assert stop.value.code == INTERRUPTED_STATUS == 130
    assert capsys.readouterr().err.strip() == "tool.py: interrupted"
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(KeyboardInterrupt):
        run_main(interrupted, argparse.ArgumentParser(prog="tool.py"), [])


def test_sigint_during_a_long_step_exits_130_without_a_traceback():
    code = textwrap.dedent("""
        import argparse, sys, time
        from utils.cli import run_main
        def main(args):
            print("ready", flush=True)
            time.sleep(60)
        run_main(main, argparse.ArgumentParser(prog="long.py"), [])
    """)
    env = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV}
    env["PYTHONPATH"] = str(ROOT)
    # as from a terminal: a runner started in the background (nohup, `&`) may pass SIGINT
    # on ignored, and Python then installs no KeyboardInterrupt handler at all
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "long.py: interrupted" and "Traceback" not in err


# ------------------------------------------------------------------ shell scripts

STUB = """#!/usr/bin/env bash
# Runs scripts.dirs for real (the scripts eval its output); records every other call.
if [ "$1" = -m ] && [ "$2" = scripts.dirs ]; then exec "{python}" "$@"; fi
printf '%s\\n' "$*" >> "{log}"
"""


@pytest.fixture
def stub(tmp_path):
    log = tmp_path / "calls.log"
    path = tmp_path / "python"
    path.write_text(STUB.format(python=sys.executable, log=log))
    path.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not re.fullmatch(r"[a-z_]+", k) or k in ("http_proxy", "https_proxy", "no_proxy")}
    env.update(PYTHON=str(path), result_path=str(tmp_path / "out"), LABELME="false")
    return env, log


def _bash(script, args, env, **extra):
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=ROOT,
                          env={**env, **extra}, text=True, capture_output=True, timeout=60)


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_refuses_an_unknown_name_and_lists_the_known_ones(script, stub):
    env, log = stub
    proc = _bash(script, ["epochs=1"], env)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: unknown variable 'epochs' "
                                                   f"(known: "), proc.stderr
    assert "PYTHON" in lines[0] and _calls(log) == []
    proc = _bash(script, ["oops"], env)
    assert proc.returncode == 2 and "expected name=value, got 'oops'" in proc.stderr
    proc = _bash(script, ["--help"], env)
    assert proc.returncode == 0 and "names:" in proc.stdout and _calls(log) == []


@pytest.mark.parametrize("script,name,value,flag", [
    ("train.sh", "num_epochs", "1", "--num_epochs 1"),
    ("train.sh", "batch_size", "7", "--batch_size 7"),
    ("grad_calculate.sh", "theta", "0.3", "--theta 0.3"),
    ("train_model_doctor.sh", "gamma", "0.5", "--gamma 0.5"),
    ("prepare_data.sh", "seed", "4", "--seed 4"),
])
def test_argument_form_and_environment_form_give_the_same_call(script, name, value, flag, stub):
    env, log = stub
    assert _bash(script, [f"{name}={value}"], env).returncode == 0
    by_argument = _calls(log)
    log.unlink()
    assert _bash(script, [], env, **{name: value}).returncode == 0
    by_environment = _calls(log)
    assert by_argument == by_environment and len(by_argument) == 1
    assert f" {flag} " in by_argument[0] + " "


def test_prepare_data_sh_knows_mini_imagenet_by_the_loaders_name(stub):
    env, log = stub
    for name in ("mnin", "mini_imagenet"):
        assert _bash("prepare_data.sh", [f"data_name={name}"], env).returncode == 0
    first, second = _calls(log)
    assert first == second
    assert "--data_name mnin --source data/raw/mnin --output data/mnin " in first


# ------------------------------------------------------------------ one place per default

CALL = re.compile(r'^\s*(?:launch|"\$\{?PYTHON\}?")\s+(?:-m\s+(?P<mod>[\w.]+)'
                  r'(?:\s+(?P<sub>[a-z_]+))?|(?P<file>[\w/]+\.py))')
FLAG = re.compile(r'(--\w+)[ =]"\$\{?(\w+)\}?"')
ASSIGN = re.compile(r'^\s*(?:export\s+)?(?:[\w|*]+\)\s*)?(\w+)=\$\{(\w+):-(.*?)\}'
                    r'(?:\s*;;)?\s*(#.*)?$')


def _python_calls(text: str):
    """(module, sub-command, the call's text joined over its continuation lines)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = CALL.match(lines[i])
        if m:
            block = [lines[i]]
            while block[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                block.append(lines[i])
            yield m["mod"] or m["file"][:-3].replace("/", "."), m["sub"], " ".join(block)
        i += 1


def _assignments(text: str) -> dict[str, list[tuple[str, str, str]]]:
    """``{var: [(default, comment, line)]}`` of every ``var=${var:-default}``; inside a
    ``case`` the comment on the ``case`` line speaks for its arms."""
    found, case_comment = {}, None
    for line in text.splitlines():
        if re.match(r"^\s*case\b", line):
            case_comment = line.partition("#")[2].strip() or None
        elif re.match(r"^\s*esac\b", line):
            case_comment = None
        a = ASSIGN.match(line)
        if a and a[1] == a[2]:
            found.setdefault(a[1], []).append((a[3], (a[4] or "").lstrip("# ") or case_comment,
                                               line.strip()))
    return found


def _as_parsed(action: argparse.Action, value):
    if action.nargs in ("+", "*") and isinstance(value, str):
        value = value.split()
        return [action.type(v) for v in value] if callable(action.type) else value
    return action.type(value) if callable(action.type) and isinstance(value, str) else value


def default_differences(script: str) -> list[str]:
    """The script's literal defaults that differ from the python flag's default (or set a
    flag whose default is unset) without a comment on their line saying why."""
    text = (ROOT / "scripts" / script).read_text()
    assigns, found = _assignments(text), []
    for module, sub, call in _python_calls(text):
        if module in ("scripts.dirs", "scripts.quickstart_table"):   # no value flags to compare
            continue
        parser = importlib.import_module(module).get_args_parser()
        subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                    None)
        # a sub-command named by a variable ("${study}"): its flags are in every sub-parser
        parsers = [subs.choices[sub]] if sub else \
            list(subs.choices.values()) if subs else [parser]
        for flag, var in FLAG.findall(call):
            parser = next(p for p in parsers if flag in p._option_string_actions)
            action = parser._option_string_actions[flag]
            if action.required:
                continue
            default = parser.get_default(action.dest)
            for value, comment, line in assigns.get(var, []):
                if "$" in value or value == "" or comment:
                    continue
                if default is None or _as_parsed(action, value) != _as_parsed(action, default):
                    found.append(f"{script}: {line}  ->  {flag} default {default!r}")
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_defaults_are_the_parsers_unless_a_comment_says_why(script):
    assert default_differences(script) == []


def test_the_defaults_check_sees_an_uncommented_difference(tmp_path, monkeypatch):
    fake_root = tmp_path
    (fake_root / "scripts").mkdir()
    (fake_root / "scripts" / "x.sh").write_text(
        'lr=${lr:-0.5}\nseed=${seed:-0}\nwd=${wd:-1}   # why: a reason\n'
        '"$PYTHON" train.py \\\n  --lr "$lr" \\\n  --seed "$seed" \\\n  --weight_decay "$wd"\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert default_differences("x.sh") == [
        "x.sh: lr=${lr:-0.5}  ->  --lr default 0.01"]


# ------------------------------------------------------------------ mini-ImageNet

def _mini_imagenet(src: Path, filename: str, label: str = "n01") -> None:
    (src / "images").mkdir(parents=True)
    for name in mini_imagenet.CSV_FILES:
        with open(src / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            if name == "train.csv":
                writer.writerow([filename, label])


@pytest.mark.parametrize("filename,label,column", [
    ("../../secret.txt", "n01", "filename"),
    ("../secret.txt", "n01", "filename"),
    ("sub/../../secret.txt", "n01", "filename"),
    ("/etc/passwd", "n01", "filename"),
    ("a.jpg", "../n01", "label"),
    ("a.jpg", "..", "label"),
])
def test_mini_imagenet_csv_path_outside_images_is_refused(tmp_path, filename, label, column):
    src = tmp_path / "work" / "raw"
    _mini_imagenet(src, filename, label)
    (tmp_path / "work" / "secret.txt").write_text("secret")
    (src / "secret.txt").write_text("secret")
    with pytest.raises(ValueError, match=f"{column} .* is not a plain file name"):
        mini_imagenet.convert_mini_imagenet(src, tmp_path / "out", train_per_class=0)
    assert not (tmp_path / "out").exists()


def test_mini_imagenet_image_lookup_stays_inside_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    with pytest.raises(ValueError, match="outside"):
        mini_imagenet._find_image(tmp_path / "images", "n01", "../secret.txt")


def test_mini_imagenet_has_the_loaders_name_and_the_old_one_as_alias():
    import loaders
    assert "mnin" in loaders.DATASETS and mini_imagenet.NAME == "mnin"
    assert CONVERTERS["mnin"].fn is CONVERTERS["mini_imagenet"].fn
    args = prepare_data.get_args_parser().parse_args(
        ["--data_name", "digits", "--output", "o", "--num_classes_subset", "3"])
    with pytest.raises(SystemExit, match="mnin"):
        prepare_data.main(args)


def test_no_entry_point_cites_a_file_users_do_not_have():
    files = [*ROOT.glob("*.py"), *ROOT.glob("*/*.py"), *ROOT.glob("*/*/*.py"),
             *ROOT.glob("scripts/*.sh")]
    cited = [f"{p.relative_to(ROOT)}:{n}" for p in files
             if p.relative_to(ROOT).parts[0] not in (".venv", "tests")
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if re.search(r"\bMETHOD(\.md)?\b", line)]
    assert cited == []
