"""Treat a trained classifier with Model Doctor's constraints (paper Eq. 7).

    L_all = L_ce + alpha · Σ_r L_ch^r + beta · Σ_r L_sp^r

Starts from ``--ori_model_path`` (``--init pretrained``, default; the released script never
loaded it), evaluates it as epoch 0, then fine-tunes with the loop of ``train.py``. The flags
are :func:`core.config.doctor_parser`'s, the run is :func:`core.treat.run_treatment`.
"""
from __future__ import annotations

import argparse

from core.config import DoctorConfig, doctor_parser as get_args_parser
from core.treat import run_treatment
from utils.cli import run_main


def main(args: argparse.Namespace) -> dict:
    return run_treatment(DoctorConfig.from_args(args))


if __name__ == "__main__":
    run_main(main, get_args_parser())
