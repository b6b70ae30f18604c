"""core/entry.py: the model/data flags resolve once, without changing ``args``; utils/ sits
below loaders/, models/ and core/."""
import argparse
import ast
import json
import pathlib

import pytest
import torch

import models
import train
from core.channel_stats import ChannelStatistics
from core.entry import (add_model_data_args, load_trained_model, resolve, resolved_args,
                        setup_model)
from fakedata import make_image_folder
from utils import save_weights

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_utils_imports_nothing_above_it():
    """Every import statement in utils/ (also those inside functions) names only the standard
    library, third-party packages or utils itself."""
    above = {"loaders", "models", "core", "metrics", "preprocessing", "scripts", "train",
             "test", "train_model_doctor"}
    found = []
    for path in sorted((ROOT / "utils").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["utils"]
            else:
                continue
            found += [(path.name, n) for n in names if n.split(".")[0] in above]
    assert found == []


def _args(*argv):
    p = argparse.ArgumentParser()
    add_model_data_args(p, model_path="unused.pth")
    return p.parse_args(["--model_name", "smallcnn", "--data_name", "digits", *argv])


def test_resolve_fills_counts_without_changing_args():
    args = _args()
    setup = resolve(args, ["a", "b", "c"])
    assert (setup.in_channels, setup.num_classes, setup.classes) == (1, 3, ["a", "b", "c"])
    assert setup.spec.name == "digits" and setup.model is None
    assert args.in_channels is None and args.num_classes is None
    record = resolved_args(args, setup)
    assert (record.in_channels, record.num_classes) == (1, 3) and record is not args
    assert args.num_classes is None
    assert resolve(_args("--in_channels", "3"), ["a"]).in_channels == 3


def test_resolve_errors_name_the_flag():
    with pytest.raises(ValueError, match="--num_classes 4 but data/x has 3 classes"):
        resolve(_args("--num_classes", "4"), ["a", "b", "c"], source="data/x")
    with pytest.raises(ValueError, match="--num_classes is needed"):
        resolve(_args(), [])
    assert resolve(_args(), [], num_classes=7).num_classes == 7      # a checkpoint's record
    assert resolve(_args("--num_classes", "5"), [], num_classes=7).num_classes == 5


def test_trained_model_loader_round_trip(tmp_path):
    torch.manual_seed(0)
    net = models.load_model("smallcnn", 1, 3)
    save_weights(net, tmp_path / "m.pth")
    args = _args("--model_path", str(tmp_path / "m.pth"))
    setup = load_trained_model(args, ["a", "b", "c"], torch.device("cpu"))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(setup.model.state_dict()[k], v)
    fresh = setup_model(args, ["a", "b", "c"]).model          # no weights: a new network
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="does not fit smallcnn"):
        load_trained_model(args, ["a", "b"], torch.device("cpu"))


def test_train_records_resolved_counts(tmp_path):
    data = make_image_folder(tmp_path / "data", num_classes=3, per_class=4)
    args = train.get_args_parser().parse_args([
        "--model_name", "smallcnn", "--data_name", "digits", "--data_dir", str(data),
        "--model_dir", str(tmp_path / "run"), "--num_epochs", "1", "--batch_size", "8",
        "--workers", "0", "--no_progress", "--device", "cpu"])
    train.main(args)
    assert args.in_channels is None and args.num_classes is None     # the caller's args
    recorded = json.loads((tmp_path / "run" / "args.json").read_text())
    assert (recorded["in_channels"], recorded["num_classes"]) == (1, 3)
    meta = torch.load(tmp_path / "run" / "model_ori.pth", weights_only=True)
    assert (meta["in_channels"], meta["num_classes"]) == (1, 3)


def test_statistics_load_from_file_or_folder(tmp_path):
    stats = ChannelStatistics({"conv": 2}, 3)
    stats.counts[:] = 1
    stats.save(tmp_path / "channel_stats.npz")
    for where in (tmp_path, tmp_path / "channel_stats.npz"):
        back = ChannelStatistics.load(where)
        assert back.layers == {"conv": 2} and back.path == tmp_path / "channel_stats.npz"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not found: .*empty.channel_stats\.npz"):
        ChannelStatistics.load(tmp_path / "empty")
