"""The output layout of one experiment, written once: the shell scripts and the Python drivers
both take their folders from :class:`ExperimentDirs`.

    EXP/models/model_ori.pth            train.sh (also last.pth, result.json, test_<split>.json)
    EXP/sift/{high,low}                 image_sift.sh mode=high / mode=low
    EXP/grads/channel_stats.npz         grad_calculate.sh
    EXP/diagnosis                       diagnose.sh
    EXP/labelme, EXP/masks              annotation (labelme JSON) and its masks
    EXP/<variant>/models/model_doctor.pth   train_model_doctor.sh variant=<variant>
    EXP/runs/<name>                     logs of train (name train) and of each variant
    EXP/ablation                        ablate_*.sh

``EXP`` is ``${result_path}/${exp_name}`` (default ``output/<model>_<data>``). The shell
scripts read the layout with one call that prints shell assignments::

    eval "$("$PYTHON" -m scripts.dirs "$result_path/$exp_name" [variant])"
    model_dir=${model_dir:-$exp_models}

This module imports nothing of the project but scripts/variants.py, so that call is quick.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from scripts.variants import LABELS

@dataclass(frozen=True)
class ExperimentDirs:
    """Folders and files of the experiment rooted at ``root``."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, result_path: str | Path, exp_name: str) -> ExperimentDirs:
        return cls(Path(result_path) / exp_name)

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def model_ori(self) -> Path:
        return self.models / "model_ori.pth"

    def sift(self, mode: str) -> Path:
        return self.root / "sift" / mode

    @property
    def high(self) -> Path:
        return self.sift("high")

    @property
    def low(self) -> Path:
        return self.sift("low")

    @property
    def grads(self) -> Path:
        return self.root / "grads"

    @property
    def diagnosis(self) -> Path:
        return self.root / "diagnosis"

    @property
    def labelme(self) -> Path:
        return self.root / "labelme"

    @property
    def masks(self) -> Path:
        return self.root / "masks"

    @property
    def ablation(self) -> Path:
        return self.root / "ablation"

    def variant(self, name: str) -> Path:
        """The model folder of a treatment variant (``model_doctor.pth``, ``last.pth``, …)."""
        return self.root / name / "models"

    def treated_model(self, name: str, checkpoint: str = "model_doctor.pth") -> Path:
        return self.variant(name) / checkpoint

    def runs(self, name: str) -> Path:
        return self.root / "runs" / name

    def shell(self, variant: str | None = None) -> str:
        """``exp_<name>=<path>`` lines for ``eval`` in a shell script."""
        paths = {"exp_dir": self.root, "exp_models": self.models, "exp_model_ori": self.model_ori,
                 "exp_sift_high": self.high, "exp_sift_low": self.low, "exp_grads": self.grads,
                 "exp_diagnosis": self.diagnosis, "exp_labelme": self.labelme,
                 "exp_masks": self.masks, "exp_ablation": self.ablation,
                 "exp_train_runs": self.runs("train")}
        if variant:
            paths.update(exp_variant_models=self.variant(variant),
                         exp_treated_model=self.treated_model(variant),
                         exp_variant_runs=self.runs(variant),
                         exp_variant_label=LABELS.get(variant, variant))
        return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in paths.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Print an experiment's folders as shell assignments "
                                            "(exp_models=..., exp_grads=..., ...).")
    p.add_argument("exp_dir", help="the experiment folder, ${result_path}/${exp_name}")
    p.add_argument("variant", nargs="?", default=None,
                   help="also exp_variant_models, exp_treated_model, exp_variant_runs, "
                        "exp_variant_label")
    args = p.parse_args(argv)
    sys.stdout.write(ExperimentDirs(Path(args.exp_dir)).shell(args.variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
