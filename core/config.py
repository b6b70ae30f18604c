"""What a run is: each stage's flags (released names) and the typed description built from them.

``train.py``, ``train_model_doctor.py`` and ``test.py`` parse with :func:`train_parser`,
:func:`doctor_parser` and :func:`test_parser`; ``Config.from_args(ns)`` turns the parsed flags
into a :class:`TrainConfig`, :class:`DoctorConfig` or :class:`TestConfig`, which the library's
run functions take (``core.engine.run_train``, ``core.treat.run_treatment``,
``core.engine.run_test``). ``cfg.to_argv()`` gives the flags back (``parse(to_argv(cfg)) ==
cfg``) and ``cfg.key()`` is the run's identity: a hash of every setting that changes the result
(not output folders, progress bars, device or worker counts). The key is recorded in
``args.json``, ``result.json`` and ``last.pth``; :func:`finished` is the one "can this finished
run be reused" check, and ``--resume`` continues only a run with the same key.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import loaders
from core.channel_stats import GRAD_MODES
from core.entry import add_model_data_args
from core.grad_constraint import SECOND_TERMS
from core.counterfactual import SWAP_PARTNERS
from core.kernels import add_kernel_rule_args
from utils.cli import HelpFormatter
from utils.runtime import add_device_args

TRAIN_DESCRIPTION = "Train a CNN classifier (paper §1): plain cross-entropy, the released recipe."
DOCTOR_DESCRIPTION = "Treat a trained classifier with Model Doctor's constraints (paper Eq. 7)."
TEST_DESCRIPTION = "Evaluate a trained classifier: top-1/top-5, per-class accuracy, confusion matrix."


def train_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """``train.py``'s flags (released names)."""
    p = argparse.ArgumentParser(description=TRAIN_DESCRIPTION, add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p)
    p.add_argument("--num_epochs", type=int, default=200, help="training epochs")
    p.add_argument("--model_dir", default="output/train/models",
                   help="output folder: model_ori.pth (best epoch), last.pth, result.json")
    p.add_argument("--data_dir", default="data/decoy_digits",
                   help="dataset root holding train/ and test/")
    p.add_argument("--log_dir", default=None,
                   help="TensorBoard scalars, args.json, epochs.jsonl (default: --model_dir)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per step "
                        "(default: 128 at 28/32 px, 32 at 96/224 px, as released)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (cosine-annealed)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight_decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--workers", type=int, default=2,
                   help="data loader worker processes (folder data mode only)")
    p.add_argument("--data_mode", default="auto", choices=loaders.DATA_MODES,
                   help="memory: decode each split once (cached beside the data) and augment "
                        "whole batches on the device (up to 64 px); folder: decode and "
                        "transform image by image; auto: memory where it applies")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds weights, shuffling, augmentation and workers")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (exact resume on GPU, slower)")
    p.add_argument("--resume", action="store_true", help="continue from model_dir/last.pth")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bars")
    p.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"),
                   help="mixed precision: autocast forward passes (fp16 adds a gradient scaler)")
    p.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: synchronise BatchNorm statistics across ranks")
    add_device_args(p)
    return p


def doctor_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """``train_model_doctor.py``'s flags: train.py's and the treatment's."""
    p = argparse.ArgumentParser(description=DOCTOR_DESCRIPTION, add_help=add_help,
                                parents=[train_parser(add_help=False)], conflict_handler="resolve",
                                formatter_class=HelpFormatter)
    p.add_argument("--ori_model_path", default="output/train/models/model_ori.pth",
                   help="the trained classifier to treat")
    p.add_argument("--res_model_path", default=None,
                   help="the treated model file (released; best test epoch); last.pth and "
                        "result.json go beside it (default: MODEL_DIR/model_doctor.pth)")
    p.add_argument("--model_dir", default=None,
                   help="output folder, when --res_model_path is not given "
                        "(default: output/doctor/models)")
    p.add_argument("--grad_dir", default="output/grads",
                   help="channel statistics: a folder holding channel_stats.npz, or the file")
    p.add_argument("--mask_dir", default=None,
                   help="foreground masks <class>/<stem>.png of annotated training images; "
                        "read when --beta, --gamma, --rrr_lambda or --swap_lambda > 0 "
                        "(default: none)")
    p.add_argument("--alpha", type=float, default=10 / 128,
                   help="weight of the channel constraint (batch-mean scale; the released "
                        "alpha=10 at batch 128 is 0.078 here)")
    p.add_argument("--alpha_released", action="store_true",
                   help="read --alpha on the released code's scale (divided by batch size)")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the spatial constraint")
    p.add_argument("--channel_layers", default="0",
                   help="comma-separated conv layers of the channel constraint")
    p.add_argument("--spatial_layers", default="0",
                   help="comma-separated conv layers of the spatial constraint")
    p.add_argument("--expand_px", type=int, default=0,
                   help="mask expansion e in input pixels (paper: 30 at 224 px)")
    p.add_argument("--grad_mode", default="abs", choices=GRAD_MODES,
                   help="gradient rectifier: abs (paper) or relu (released code)")
    p.add_argument("--second_term", default="all", choices=SECOND_TERMS,
                   help="all (paper: every channel of the second class) or mask (released)")
    p.add_argument("--noise_draws", type=int, default=1, help="J for the constraint gradients")
    p.add_argument("--noise_delta", type=float, default=0.0, help="δ for the constraint gradients")
    p.add_argument("--gamma", type=float, default=0.0,
                   help="weight of the background-kernel constraint (not in the paper): "
                        "suppress, on every training image, the gradient on the kernels whose "
                        "gradient on the annotated images falls mostly on the background")
    p.add_argument("--kernel_layers", default="-1",
                   help="comma-separated conv layers of the background-kernel constraint "
                        "(-1 = the first conv; write --kernel_layers=-1,-2 for several)")
    p.add_argument("--kernel_tau", type=float, default=0.5,
                   help="a kernel is a background kernel when this share of its gradient on "
                        "the annotated images lies on their background")
    add_kernel_rule_args(p)
    p.add_argument("--kernel_reinit", action="store_true",
                   help="before the first epoch, re-initialise the background kernels that "
                        "--gamma suppresses (not in the paper)")
    p.add_argument("--kernel_reinit_random", action="store_true",
                   help="control for --kernel_reinit: re-initialise as many kernels, drawn at "
                        "random, instead of the background ones")
    p.add_argument("--rrr_lambda", type=float, default=0.0,
                   help="Ross et al.'s input-gradient penalty with this weight on the masked "
                        "images: a baseline with alpha = beta = gamma = 0, else added to them")
    p.add_argument("--swap_lambda", type=float, default=0.0,
                   help="weight of the cross-entropy on annotated images shown on the "
                        "background of another annotated image (not in the paper; needs "
                        "--mask_dir; the images: --swap_batch drawn per step, or with "
                        "--replay_annotated the batch's; README: Terms)")
    p.add_argument("--swap_partners", default="other", choices=SWAP_PARTNERS,
                   help="whose background a swapped image gets: an annotated image of another "
                        "class, or of any class (the background then independent of the label)")
    p.add_argument("--swap_batch", type=int, default=32,
                   help="swaps per step drawn from all annotated images when "
                        "--replay_annotated is 0")
    p.add_argument("--replay_annotated", type=int, default=0,
                   help="append this many annotated images to every training batch (0: off, "
                        "the paper; they are then in about 2 %% of batches at 20 per class)")
    p.add_argument("--init", default="pretrained", choices=("pretrained", "scratch"),
                   help="start from --ori_model_path, or from random weights (released bug)")
    p.add_argument("--allow_foreign_stats", action="store_true",
                   help="use --grad_dir statistics computed for another model name, data set, "
                        "grad_mode or other weights than --ori_model_path")
    p.set_defaults(num_epochs=20)
    return p


def test_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """``test.py``'s flags (released names)."""
    p = argparse.ArgumentParser(description=TEST_DESCRIPTION, add_help=add_help,
                                formatter_class=HelpFormatter)
    add_model_data_args(p, model_path="output/train/models/model_ori.pth")
    p.add_argument("--data_dir", "--data_path", dest="data_dir", default="data/decoy_digits",
                   help="dataset root holding the --data_type folder, or the folder of class "
                        "folders to evaluate (released --data_path, e.g. data/cifar10/test)")
    p.add_argument("--data_type", default="test",
                   help="split folder to evaluate when --data_dir holds it")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per batch (default: 128 at 28/32 px, 32 at 96/224 px)")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    p.add_argument("--result_path", default=None,
                   help="JSON output (default: test_<split folder>.json beside --model_path)")
    p.add_argument("--no_progress", action="store_true", help="hide the tqdm progress bar")
    add_device_args(p)
    return p


# -- typed run descriptions --------------------------------------------------------------------
# Settings that do not change what a run computes: where it writes, how it shows progress, on
# which device and with how many loader workers it runs, whether it may continue a run.
NOT_RESULT = frozenset({"model_dir", "log_dir", "res_model_path", "result_path", "workers",
                        "no_progress", "device", "device_index", "resume",
                        "allow_foreign_stats"})
# Settings naming input files: the key holds their absolute form (the same data from another
# working folder is the same run).
PATHS = frozenset({"data_dir", "ori_model_path", "grad_dir", "mask_dir", "model_path"})
# Settings added after runs were recorded, with the value that earlier runs used (a term
# switched off): at that value they are left out of the key, so those runs keep their key.
ADDED_LATER = {"swap_lambda": 0.0, "swap_partners": "other", "swap_batch": 32}


@dataclass(frozen=True)
class RunConfig:
    """Base of the stage configs: the fields are exactly the parser's destinations."""
    stage: ClassVar[str]

    @classmethod
    def parser(cls, add_help: bool = True) -> argparse.ArgumentParser:
        """The stage's parser (each stage config names its own)."""
        raise TypeError(f"{cls.__name__} is not a stage config: use TrainConfig, "
                        "DoctorConfig or TestConfig")

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> RunConfig:
        """The config of parsed flags (extra attributes of ``ns`` are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(vars(ns)) - names)
        if extra:
            raise TypeError(f"{cls.__name__}: unknown settings {extra}")
        return cls(**{k: v for k, v in vars(ns).items() if k in names})

    @classmethod
    def parse(cls, argv: list[str]) -> RunConfig:
        return cls.from_args(cls.parser().parse_args(argv))

    def namespace(self) -> argparse.Namespace:
        return argparse.Namespace(**dataclasses.asdict(self))

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The flags that parse back to this config (defaults included, so the argv stands
        alone)."""
        argv = []
        for action in self.parser()._actions:
            if not action.option_strings or action.dest == "help":
                continue
            value = getattr(self, action.dest)
            flag = max(action.option_strings, key=lambda s: (s == f"--{action.dest}", len(s)))
            if isinstance(action, argparse._StoreTrueAction):
                argv += [flag] if value else []
            elif value is not None:
                argv.append(f"{flag}={value}")   # '=': values such as -1,-2 stay values
        return argv

    def settings(self) -> dict:
        """The settings that change the result: every field but :data:`NOT_RESULT`, input
        paths made absolute."""
        out = {"stage": self.stage}
        for f in dataclasses.fields(self):
            if f.name in NOT_RESULT:
                continue
            if f.name in ADDED_LATER and getattr(self, f.name) == ADDED_LATER[f.name]:
                continue
            value = getattr(self, f.name)
            out[f.name] = str(Path(value).resolve()) if f.name in PATHS and value else value
        return out

    def key(self) -> str:
        """Stable hash of :meth:`settings` (16 hex digits)."""
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """``train.py``: see :func:`train_parser` for each flag."""
    stage: ClassVar[str] = "train"
    model_name: str
    data_name: str
    in_channels: int | None
    image_size: int | None
    num_classes: int | None
    stem: str | None
    num_epochs: int
    model_dir: str | None
    data_dir: str
    log_dir: str | None
    batch_size: int | None
    lr: float
    momentum: float
    weight_decay: float
    workers: int
    data_mode: str
    seed: int
    deterministic: bool
    resume: bool
    no_progress: bool
    amp: str
    sync_bn: bool
    device: str
    device_index: str | None

    @classmethod
    def parser(cls, add_help: bool = True) -> argparse.ArgumentParser:
        return train_parser(add_help)

    def run_dir(self) -> Path:
        """The folder of ``last.pth`` and ``result.json``."""
        return Path(self.model_dir)


@dataclass(frozen=True)
class DoctorConfig(TrainConfig):
    """``train_model_doctor.py``: see :func:`doctor_parser` for each flag."""
    stage: ClassVar[str] = "doctor"
    ori_model_path: str
    res_model_path: str | None
    grad_dir: str
    mask_dir: str | None
    alpha: float
    alpha_released: bool
    beta: float
    channel_layers: str
    spatial_layers: str
    expand_px: int
    grad_mode: str
    second_term: str
    noise_draws: int
    noise_delta: float
    gamma: float
    kernel_layers: str
    kernel_tau: float
    kernel_rule: str
    kernel_tau_excess: float
    kernel_top: float
    kernel_reinit: bool
    kernel_reinit_random: bool
    rrr_lambda: float
    swap_lambda: float
    swap_partners: str
    swap_batch: int
    replay_annotated: int
    init: str
    allow_foreign_stats: bool

    @classmethod
    def parser(cls, add_help: bool = True) -> argparse.ArgumentParser:
        return doctor_parser(add_help)

    def run_dir(self) -> Path:
        from core.treat import output_paths
        return output_paths(self)[0]


@dataclass(frozen=True)
class TestConfig(RunConfig):
    """``test.py``: see :func:`test_parser` for each flag."""
    __test__ = False   # not a pytest class
    stage: ClassVar[str] = "test"
    model_name: str
    data_name: str
    in_channels: int | None
    image_size: int | None
    num_classes: int | None
    stem: str | None
    model_path: str
    data_dir: str
    data_type: str
    batch_size: int | None
    workers: int
    result_path: str | None
    no_progress: bool
    device: str
    device_index: str | None

    @classmethod
    def parser(cls, add_help: bool = True) -> argparse.ArgumentParser:
        return test_parser(add_help)


# -- the one reuse check ------------------------------------------------------------------------
def recorded_key(run_dir: str | Path) -> str | None:
    """The key ``result.json`` of ``run_dir`` records (None: no finished run there)."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("key")
    except (json.JSONDecodeError, AttributeError):
        return None


def finished(run_dir: str | Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly ``cfg``'s settings (its
    ``result.json`` records ``cfg.key()``)."""
    return recorded_key(run_dir) == cfg.key()


def resume_key(run_dir: str | Path) -> str | None:
    """The key of the training state ``run_dir/last.pth`` (None: none, or not readable)."""
    from utils.io import load_checkpoint
    path = Path(run_dir) / "last.pth"
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except ValueError:
        return None
    return state.get("key") if isinstance(state, dict) else None


def changed_settings(recorded: dict, cfg: RunConfig) -> list[str]:
    """``name old -> new`` for each setting of ``cfg`` that differs from ``recorded`` (a
    :meth:`RunConfig.settings` dict)."""
    now = cfg.settings()
    return [f"{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(now) | set(recorded))
            if recorded.get(k) != now.get(k)]
