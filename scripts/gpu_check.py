"""GPU check: the CUDA code paths of the entry points, then one Table 1 cell, timed.

Run by ``scripts/gpu_check.sh`` (its header has the one command for a GPU machine). Every step
is a fresh process of an entry point (``train.py``, ``train_model_doctor.py``, ``test.py``,
``core/image_sift.py``, ``core/grad_calculate.py``) or of torchrun; each gets pass/fail and
its seconds, its output goes to ``OUT/logs/<step>.log``.

1. Data: the four Fashion-MNIST IDX files of ``--idx_dir`` are converted to image folders by
   ``preprocessing/prepare_data.py``: all of them for the cell, and the first images of each
   class (re-written as IDX files) for the checks. ``--tiny`` generates a few images per
   class instead, written in the real IDX format, and uses them for both.
2. Checks, one epoch each on the small data: training and treatment with ``--amp bf16`` and
   ``--amp fp16`` (the gradient scaler) on the in-memory data path (``--data_mode memory``,
   batches augmented on the device), sifting, statistics and ``test.py`` on the device,
   ``train.py`` under torchrun with one rank, and a one-rank process group (NCCL on CUDA,
   gloo on the CPU) that runs a DistributedDataParallel step. Without CUDA the fp16 steps
   are ``skipped (no CUDA)``; their bf16 versions run on the CPU.
3. The cell: ``--model_name`` trained on the whole data, then sift high -> channel statistics
   -> sift low -> +Channel (alpha; beta = 0 at 28 px, the released tip) against a plain
   fine-tune control of the same length; final-epoch and best-epoch test accuracy of both,
   and the training throughput (images/s) of each run.

Everything goes under ``--out_dir`` (data, runs, logs, the processes' temporary files):
``gpu_check.json`` and ``gpu_check.md`` are rewritten after every step, so a run cut short
still reports what it did. A step that would start after ``--budget_s`` is
``skipped (time budget)``; a step still running ``--grace_s`` after it is stopped.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as `python scripts/gpu_check.py` too
    sys.path.insert(0, str(REPO))

from preprocessing.mnist import FILES, IMAGES_MAGIC, LABELS_MAGIC, read_idx  # noqa: E402
from scripts.table1 import read_paper  # noqa: E402
from utils import atomic_write_text  # noqa: E402

DATA_NAME = "fashion_mnist"
NUM_CLASSES = 10
SIZE = 28
SKIP_NO_CUDA = "skipped (no CUDA)"
SKIP_BUDGET = "skipped (time budget)"


# -- IDX files -----------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """``array`` (uint8) as a gzipped IDX file: big-endian int32 magic and dimensions, then
    the values row-major (the format ``preprocessing.mnist.read_idx`` reads)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic % 256 != array.ndim:
        raise ValueError(f"IDX magic {magic} is for {magic % 256}-d data, got {array.ndim}-d")
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    images_stem, labels_stem = FILES[split]
    write_idx(folder / f"{images_stem}.gz", images, IMAGES_MAGIC)
    write_idx(folder / f"{labels_stem}.gz", labels, LABELS_MAGIC)


def tiny_idx(folder: Path, per_class: dict[str, int], seed: int = 0) -> None:
    """A few learnable 28 px images per class: dark noise with a bright 6 x 6 square whose
    place encodes the class."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), n)
        images = rng.integers(0, 60, (len(labels), SIZE, SIZE), dtype=np.uint8)
        for i, k in enumerate(labels):
            y, x = 2 + 12 * (k // 5), 1 + 5 * (k % 5)
            images[i, y:y + 6, x:x + 6] = 230
        write_split(folder, split, images, labels)


def subset_idx(source: Path, folder: Path, per_class: dict[str, int]) -> None:
    """The first ``per_class[split]`` images of each class of ``source``'s IDX files."""
    for split, n in per_class.items():
        images_stem, labels_stem = FILES[split]
        images = read_idx(find_idx(source, images_stem), IMAGES_MAGIC)
        labels = read_idx(find_idx(source, labels_stem), LABELS_MAGIC)
        keep = np.sort(np.concatenate([np.flatnonzero(labels == k)[:n]
                                       for k in range(NUM_CLASSES)]))
        write_split(folder, split, images[keep], labels[keep])


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"--idx_dir {folder}: {stem}.gz not found (the four Fashion-MNIST "
                            f"IDX files are needed, e.g. from /usr/share/datasets/fashion-mnist)")


# -- steps ---------------------------------------------------------------------------------------

@dataclass
class Step:
    name: str
    group: str           # data | check | cell
    what: str            # one line for the report
    status: str = "not run"
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    log: str = ""
    note: str = ""


class Runner:
    """Runs each step as a process of the repository, records it and rewrites the report."""

    def __init__(self, args: argparse.Namespace, report: Report):
        self.args, self.report = args, report
        self.out = args.out_dir
        self.start = time.monotonic()
        tmp = self.out / "tmp"
        (tmp / "matplotlib").mkdir(parents=True, exist_ok=True)
        # the processes' temporary and cache files stay under --out_dir too
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp),
                    "MPLCONFIGDIR": str(tmp / "matplotlib")}

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def skip(self, step: Step, status: str) -> bool:
        step.status = status
        self.report.add(step)
        return False

    def run(self, step: Step, argv: list[str], cuda_only: bool = False,
            says_device: bool = False) -> bool:
        """Run ``argv`` (after the interpreter) from the repository root; True if it passed.
        ``says_device``: the step prints ``device <type>`` (train.py), which must be the
        expected one: a run that fell back to the CPU fails."""
        if cuda_only and not self.report.cuda:
            return self.skip(step, SKIP_NO_CUDA)
        if self.elapsed() > self.args.budget_s:
            return self.skip(step, SKIP_BUDGET)
        step.command = [sys.executable, *map(str, argv)]
        log = self.out / "logs" / f"{step.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        step.log = str(log.relative_to(self.out))
        timeout = self.args.budget_s + self.args.grace_s - self.elapsed()
        t0 = time.monotonic()
        with open(log, "w") as f:
            f.write(" ".join(step.command) + "\n\n")
            f.flush()
            # its own process group, so that a stopped torchrun takes its workers along
            proc = subprocess.Popen(step.command, cwd=REPO, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        step.seconds = round(time.monotonic() - t0, 2)
        device = f"device {'cuda' if self.report.cuda else 'cpu'}"
        if rc == 0 and says_device and device not in log.read_text(errors="replace"):
            step.status, step.note = "fail", f"the log does not say '{device}'"
        elif rc == 0:
            step.status = "pass"
        else:
            step.status = "fail"
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            step.note = (f"stopped after {step.seconds:.0f} s (time budget)" if rc is None
                         else f"exit {rc}: {tail[0] if tail else ''}")[:300]
        print(f"[gpu_check] {step.status:>4}  {step.name} ({step.seconds:.1f} s)"
              + (f"  {step.note}" if step.note else ""), flush=True)
        self.report.add(step)
        return step.status == "pass"


# -- the report ----------------------------------------------------------------------------------

class Report:
    def __init__(self, args: argparse.Namespace):
        import torch
        self.args = args
        self.cuda = torch.cuda.is_available() and not args.no_cuda
        self.info = {
            "tiny": args.tiny,
            "device": torch.cuda.get_device_name() if self.cuda
            else f"cpu ({platform.processor() or platform.machine()}, no CUDA)",
            "cuda": self.cuda, "torch": torch.__version__,
            "cuda_version": torch.version.cuda if self.cuda else None,
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "budget_s": args.budget_s,
            "recipe": {k: getattr(args, k) for k in RECIPE},
        }
        self.steps: list[Step] = []
        self.cell: dict = {}
        self.seconds = 0.0

    def add(self, step: Step) -> None:
        self.steps.append(step)
        self.write()

    def ok(self) -> bool:
        """Every step passed, or needs CUDA and there is none (a step skipped for the time
        budget or a failed prerequisite leaves the check incomplete)."""
        return all(s.status in ("pass", SKIP_NO_CUDA) for s in self.steps)

    def data(self) -> dict:
        return {**self.info, "seconds": round(self.seconds, 1), "ok": self.ok(),
                "steps": [asdict(s) for s in self.steps], "cell": self.cell}

    def write(self) -> None:
        out = self.args.out_dir
        atomic_write_text(out / "gpu_check.json", json.dumps(self.data(), indent=2) + "\n")
        atomic_write_text(out / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        i, a = self.info, self.args
        lines = [f"# GPU check{' (tiny, CPU test run)' if a.tiny else ''}", "",
                 f"Device: {i['device']}; torch {i['torch']}"
                 + (f" (CUDA {i['cuda_version']})" if i["cuda_version"] else "")
                 + f"; Python {i['python']}; started {i['started']}; "
                 f"{self.seconds:.0f} s in all (budget {a.budget_s} s).", "",
                 "| step | what | status | seconds |", "|---|---|---|---|"]
        lines += [f"| {s.name} | {s.what} | {s.status}{' — ' + s.note if s.note else ''} | "
                  f"{s.seconds:.1f} |" for s in self.steps]
        c = self.cell
        if c.get("runs"):
            lines += ["", f"## Table 1 cell: {c['model_name']} on {DATA_NAME} "
                      f"({c['train_images']} training / {c['test_images']} test images)", "",
                      f"Original: {a.train_epochs} epoch(s); control and +Channel: "
                      f"{a.doctor_epochs} epoch(s) each from it (alpha {a.alpha}, beta 0), "
                      f"SGD lr {a.lr}, batch {a.batch_size}, --amp {a.amp}, T = {a.num_high} "
                      f"images per class, J = {a.noise_draws}, delta {a.noise_delta}. "
                      f"Test top-1 (%); best epoch chosen on the test set (released protocol; "
                      f"for the treatments epochs >= 1).", "",
                      "| run | final epoch | best epoch | epochs | seconds | images/s |",
                      "|---|---|---|---|---|---|"]
            for name, r in c["runs"].items():
                lines.append(f"| {name} | {pct(r.get('final_acc'))} | {pct(r.get('best_acc'))}"
                             f" | {r.get('epochs', '')} | {r.get('seconds', 0):.1f} | "
                             f"{r.get('images_per_s', 0):.0f} |")
            if "channel_minus_control_final" in c:
                lines += ["", "+Channel minus control: final "
                          f"{c['channel_minus_control_final']:+.2f} points, best "
                          f"{c['channel_minus_control_best']:+.2f} points. Paper "
                          f"(Table 1, {c['model_name']}): base {paper(c, 'base', '')}, "
                          f"+Channel {paper(c, 'channel', '+')}."]
        return "\n".join(lines) + "\n"


def paper(cell: dict, key: str, sign: str) -> str:
    value = cell["paper"].get(key)
    return "n/a" if value is None else f"{value:{sign}.2f}"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def run_numbers(run_dir: Path, log_dir: Path, images: int, treated: bool) -> dict:
    """Final and best test top-1 of a run, its epochs, seconds and training images/s (the
    seconds include each epoch's test pass)."""
    result = json.loads((run_dir / "result.json").read_text())
    epochs = [json.loads(l) for l in (log_dir / "epochs.jsonl").read_text().splitlines()]
    accs = [e["test/top1"] for e in epochs if e.get("epoch", 0) >= (1 if treated else 0)]
    seconds = float(result["seconds"])
    return {"final_acc": float(result["final_acc"]), "best_acc": max(accs),
            "best_epoch": max((e for e in epochs if e.get("epoch", 0) >= 1),
                              key=lambda e: e["test/top1"])["epoch"],
            "epochs": int(result["epochs"]), "seconds": seconds,
            "images_per_s": images * int(result["epochs"]) / seconds}


# -- the run -------------------------------------------------------------------------------------

RECIPE = ("model_name", "train_epochs", "doctor_epochs", "batch_size", "lr", "amp", "alpha",
          "num_high", "num_low", "noise_draws", "noise_delta", "check_train_per_class",
          "check_test_per_class", "seed")


def count_images(root: Path, split: str) -> int:
    return sum(1 for p in (root / split).rglob("*.png"))


def prepare(runner: Runner, name: str, idx: Path, data: Path, verify: bool) -> bool:
    return runner.run(Step(name, "data", f"IDX files -> image folders ({idx.name})"),
                      ["preprocessing/prepare_data.py", "--data_name", DATA_NAME,
                       "--source", idx, "--output", data] + ([] if verify else ["--no_verify"]))


def checks(runner: Runner, data: Path, work: Path) -> None:
    """One epoch of each CUDA code path on the small data."""
    a = runner.args
    common = ["--model_name", a.model_name, "--data_name", DATA_NAME, "--no_progress"]
    fit = [*common, "--seed", a.seed, "--data_dir", data, "--num_epochs", 1,
           "--batch_size", a.batch_size, "--lr", a.lr, "--workers", 0, "--data_mode", "memory"]
    model = work / "bf16" / "model_ori.pth"
    where = "on the device" if runner.report.cuda else "on the CPU"
    trained = runner.run(
        Step("train_bf16", "check", f"train.py --amp bf16, in-memory data {where}"),
        ["train.py", *fit, "--amp", "bf16", "--model_dir", model.parent], says_device=True)
    runner.run(Step("train_fp16", "check", "train.py --amp fp16 (gradient scaler), in-memory data"),
               ["train.py", *fit, "--amp", "fp16", "--model_dir", work / "fp16"],
               cuda_only=True, says_device=True)
    sifted = trained and runner.run(
        Step("sift_high", "check", f"core/image_sift.py {where}"),
        ["core/image_sift.py", *common, "--model_path", model, "--data_path", data,
         "--image_path", work / "sift_high", "--mode", "high", "--num_images", 10,
         "--workers", 0])
    stats = sifted and runner.run(
        Step("statistics", "check", f"core/grad_calculate.py (J=2) {where}"),
        ["core/grad_calculate.py", *common, "--model_path", model,
         "--data_path", work / "sift_high", "--grad_path", work / "grads", "--noise_draws", 2,
         "--seed", a.seed, "--allow_empty_classes", "--no_figures", "--workers", 0])
    for amp in ("bf16", "fp16"):
        step = Step(f"doctor_{amp}", "check",
                    f"train_model_doctor.py +Channel --amp {amp}"
                    + (" (gradient scaler)" if amp == "fp16" else "") + ", in-memory data")
        if not stats:
            runner.skip(step, "skipped (needs statistics)")
            continue
        runner.run(step, ["train_model_doctor.py", *fit, "--amp", amp, "--ori_model_path", model,
                          "--grad_dir", work / "grads", "--alpha", a.alpha, "--beta", 0,
                          "--res_model_path", work / f"doctor_{amp}" / "model_doctor.pth"],
                   cuda_only=amp == "fp16")
    step = Step("test", "check", f"test.py {where}")
    if trained:
        runner.run(step, ["test.py", *common, "--model_path", model, "--data_dir", data,
                          "--workers", 0, "--result_path", work / "test.json"])
    else:
        runner.skip(step, "skipped (needs train_bf16)")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 1]
    backend = "NCCL" if runner.report.cuda else "gloo"
    runner.run(Step("torchrun_train", "check", "train.py under torchrun, 1 rank"),
               [*torchrun, "train.py", *fit, "--model_dir", work / "torchrun"], says_device=True)
    runner.run(Step("torchrun_ddp", "check",
                    f"1-rank {backend} process group: DistributedDataParallel step + all_reduce"),
               [*torchrun, "scripts/gpu_check.py", "--ddp_probe", "--model_name", a.model_name,
                "--out_dir", work / "ddp_probe"])


def cell(runner: Runner, data: Path, exp: Path) -> None:
    """The Table 1 cell: original -> sift high -> statistics -> sift low -> control / +Channel."""
    a, report = runner.args, runner.report
    common = ["--model_name", a.model_name, "--data_name", DATA_NAME, "--no_progress"]
    fit = [*common, "--seed", a.seed, "--data_dir", data, "--batch_size", a.batch_size,
           "--lr", a.lr, "--workers", 0, "--data_mode", "memory", "--amp", a.amp]
    allow_empty = ["--allow_empty_classes"] if a.tiny else []   # a 1-epoch model may miss a class
    model = exp / "models" / "model_ori.pth"
    images = count_images(data, "train")
    report.cell = {"model_name": a.model_name, "data_name": DATA_NAME, "train_images": images,
                   "test_images": count_images(data, "test"), "runs": {},
                   "paper": read_paper().get((a.model_name, DATA_NAME), {})}
    steps = [  # (name, what, the step it needs, argv)
        ("cell_train", f"train {a.model_name}, {a.train_epochs} epoch(s)", None,
         ["train.py", *fit, "--num_epochs", a.train_epochs, "--model_dir", exp / "models",
          "--log_dir", exp / "runs" / "train"]),
        ("cell_sift_high", f"sift high, T = {a.num_high} per class", "cell_train",
         ["core/image_sift.py", *common, "--model_path", model, "--data_path", data,
          "--image_path", exp / "sift" / "high", "--mode", "high", "--num_images", a.num_high,
          "--workers", 0]),
        ("cell_statistics", f"channel statistics, J = {a.noise_draws}", "cell_sift_high",
         ["core/grad_calculate.py", *common, "--model_path", model,
          "--data_path", exp / "sift" / "high", "--grad_path", exp / "grads",
          "--noise_draws", a.noise_draws, "--noise_delta", a.noise_delta, "--seed", a.seed,
          "--workers", 0, *allow_empty]),
        ("cell_sift_low", f"sift low, {a.num_low} per class (annotation candidates)",
         "cell_train",
         ["core/image_sift.py", *common, "--model_path", model, "--data_path", data,
          "--image_path", exp / "sift" / "low", "--mode", "low", "--num_images", a.num_low,
          "--workers", 0]),
    ]
    for variant, alpha in (("control", 0.0), ("channel", a.alpha)):
        steps.append((f"cell_{variant}",
                      f"{'fine-tune control' if variant == 'control' else '+Channel'}: "
                      f"{a.doctor_epochs} epoch(s), alpha {alpha}, beta 0", "cell_statistics",
                      ["train_model_doctor.py", *fit, "--num_epochs", a.doctor_epochs,
                       "--ori_model_path", model, "--grad_dir", exp / "grads",
                       "--alpha", alpha, "--beta", 0,
                       "--res_model_path", exp / variant / "models" / "model_doctor.pth",
                       "--log_dir", exp / "runs" / variant]))
    passed = set()
    for name, what, needs, argv in steps:
        step = Step(name, "cell", what)
        if needs and needs not in passed:
            runner.skip(step, f"skipped (needs {needs})")
            continue
        if not runner.run(step, argv, says_device=argv[0] == "train.py"):
            continue
        passed.add(name)
        run = {"cell_train": ("original", exp / "models", "train", False),
               "cell_control": ("control", exp / "control" / "models", "control", True),
               "cell_channel": ("channel", exp / "channel" / "models", "channel", True)}.get(name)
        if run:
            label, run_dir, log_name, treated = run
            report.cell["runs"][label] = run_numbers(run_dir, exp / "runs" / log_name, images,
                                                     treated)
    runs = report.cell["runs"]
    if "control" in runs and "channel" in runs:
        for key in ("final", "best"):
            report.cell[f"channel_minus_control_{key}"] = \
                100 * (runs["channel"][f"{key}_acc"] - runs["control"][f"{key}_acc"])
    report.write()


def ddp_probe(args: argparse.Namespace) -> None:
    """Under torchrun: join the process group (NCCL on CUDA, gloo on the CPU), run one
    DistributedDataParallel step of ``--model_name`` and an all_reduce; write the result."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    import models
    cuda = torch.cuda.is_available()
    device = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda
              else torch.device("cpu"))
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        torch.manual_seed(0)
        model = models.load_model(args.model_name, 1, NUM_CLASSES, image_size=SIZE).to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        x = torch.randn(8, 1, SIZE, SIZE, device=device)
        y = torch.arange(8, device=device) % NUM_CLASSES
        F.cross_entropy(ddp(x), y).backward()
        grad_norm = torch.stack([p.grad.norm() for p in model.parameters()
                                 if p.grad is not None]).norm()
        total = torch.ones(1, device=device) * (dist.get_rank() + 1)
        dist.all_reduce(total)
        world = dist.get_world_size()
        if total.item() != world * (world + 1) / 2 or not torch.isfinite(grad_norm):
            raise RuntimeError(f"all_reduce gave {total.item()}, gradient norm {grad_norm}")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out_dir / "ddp_probe.json", json.dumps(
            {"backend": dist.get_backend(), "world_size": world, "device": str(device),
             "grad_norm": grad_norm.item()}) + "\n")
        print(f"{dist.get_backend()}: world {world}, DDP step on {device}, "
              f"gradient norm {grad_norm.item():.4f}")
    finally:
        dist.destroy_process_group()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=Path, required=True,
                   help="everything is written here: gpu_check.{json,md}, logs/, data/, runs")
    p.add_argument("--idx_dir", type=Path, default=Path("data/fashion_mnist_idx"),
                   help="folder of the four Fashion-MNIST IDX files (.gz); unused with --tiny")
    p.add_argument("--tiny", action="store_true",
                   help="generated IDX data, a few images per class (a CPU test of the script)")
    p.add_argument("--tiny_per_class", type=int, default=6, help="--tiny: images per class")
    p.add_argument("--model_name", default="shufflenetv2", help="the cell's network")
    p.add_argument("--train_epochs", type=int, default=12, help="epochs of the original")
    p.add_argument("--doctor_epochs", type=int, default=4,
                   help="epochs of the control and of +Channel")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--amp", default="bf16", choices=("off", "bf16", "fp16"),
                   help="mixed precision of the cell's training runs")
    p.add_argument("--alpha", type=float, default=0.078, help="channel constraint weight")
    p.add_argument("--num_high", type=int, default=100, help="T, sifted images per class")
    p.add_argument("--num_low", type=int, default=20, help="annotation candidates per class")
    p.add_argument("--noise_draws", type=int, default=10, help="J of the statistics")
    p.add_argument("--noise_delta", type=float, default=0.1, help="delta of the statistics")
    p.add_argument("--check_train_per_class", type=int, default=200,
                   help="training images per class of the checks' data")
    p.add_argument("--check_test_per_class", type=int, default=50,
                   help="test images per class of the checks' data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget_s", type=float, default=420,
                   help="no step starts after this many seconds")
    p.add_argument("--grace_s", type=float, default=60,
                   help="a step still running this long after the budget is stopped")
    p.add_argument("--no_cuda", action="store_true", help="run as if there were no GPU")
    p.add_argument("--ddp_probe", action="store_true", help=argparse.SUPPRESS)
    return p


def main(args: argparse.Namespace) -> int:
    if args.ddp_probe:
        ddp_probe(args)
        return 0
    if not args.tiny:
        for stem in (s for pair in FILES.values() for s in pair):
            find_idx(args.idx_dir, stem)
    out = args.out_dir = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.no_cuda:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""   # the steps too
    report = Report(args)
    runner = Runner(args, report)
    print(f"[gpu_check] {report.info['device']}, torch {report.info['torch']}; "
          f"writing {out}/gpu_check.json", flush=True)
    t0 = time.monotonic()
    try:
        if args.tiny:
            tiny_idx(out / "idx", {"train": args.tiny_per_class, "test": args.tiny_per_class})
            ready = prepare(runner, "data", out / "idx", out / "data" / DATA_NAME, verify=False)
            check_data = cell_data = out / "data" / DATA_NAME
        else:
            subset_idx(args.idx_dir.resolve(), out / "idx_check",
                       {"train": args.check_train_per_class, "test": args.check_test_per_class})
            ready = prepare(runner, "data_check", out / "idx_check",
                            out / "data" / f"{DATA_NAME}_check", verify=False)
            check_data = out / "data" / f"{DATA_NAME}_check"
            cell_data = out / "data" / DATA_NAME
        if ready:
            checks(runner, check_data, out / "checks")
        if not args.tiny:
            ready = prepare(runner, "data_full", args.idx_dir.resolve(), cell_data, verify=True)
        if ready:
            cell(runner, cell_data, out / "cell")
    finally:
        report.seconds = time.monotonic() - t0
        report.write()
    print(f"[gpu_check] {'ok' if report.ok() else 'FAILED'} in {report.seconds:.0f} s: "
          f"{out}/gpu_check.md", flush=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    try:
        sys.exit(main(parsed))
    except FileNotFoundError as exc:
        get_args_parser().error(str(exc))
