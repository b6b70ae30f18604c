"""The released re-implementation computes what ours does; the benchmark driver runs."""
import json
import math

import pytest
import torch

import models
from core.grad_calculate import compute_statistics
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm
from fakedata import make_image_folder
from loaders import PlainBatch
from scripts import benchmark
from scripts.bench import fixtures
from scripts.bench.released import check_statistics
from scripts.released_reference import ReleasedGradConstraint, released_statistics

CPU = torch.device("cpu")


def tiny_model(num_classes=3):
    torch.manual_seed(0)
    return models.load_model("smallcnn", 3, num_classes, image_size=32).eval()


def batches(num_batches=2, batch_size=6, num_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [PlainBatch(torch.randn(batch_size, 3, 32, 32, generator=g),
                       torch.arange(batch_size) % num_classes, []) for _ in range(num_batches)]


def test_released_statistics_equal_ours():
    model, data = tiny_model(), batches()
    names = [n for n, _ in models.load_modules(model)]
    released = released_statistics(model, data, 3, CPU, names, theta=0.2)
    ours = compute_statistics(model, data, names, 3, CPU, noise_draws=1, noise_delta=0.0,
                              grad_mode="relu", theta=0.2, progress=False)
    for name in names:
        # the release differentiates the batch-mean logit: its sums are ours / B
        torch.testing.assert_close(released[name]["sum"].double() * 6, ours.sums[name],
                                   rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(released[name]["normalized"].double(),
                                   ours.normalized(name), rtol=0, atol=1e-2)
        differ = released[name]["mask"] != ours.mask(name)
        assert not (differ & ((ours.normalized(name) - 0.2).abs() > 1e-3)).any(), name
    check = check_statistics(released, ours, 6)
    assert check["ok"] and check["mask_mismatches"] == 0


def test_released_losses_equal_ours_times_batch():
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(True)
    batch = fixtures.synthetic_batch(6, 3, 32, 3, CPU, seed=1)
    images, labels = batch[0], batch[1]
    stats = fixtures.random_statistics(model, [0], 3, seed=2)
    name = models.load_modules(model, [0])[0][0]
    ours = DoctorLoss([ChannelTerm(model, stats, [0], 1.0, grad_mode="relu", second_term="mask",
                                   num_classes=3), SpatialTerm(model, [0], 1.0)], model=model)
    released = ReleasedGradConstraint(model, 0, stats.mask(name), alpha=1.0, beta=1.0,
                                      resize="area")
    try:
        logits = model(images)
        loss_ours, terms_ours = ours(batch, images, labels, logits)
        _, terms_rel = released(batch, images, labels, logits)
        assert math.isclose(terms_ours["channel"], 6 * terms_rel["channel"], rel_tol=1e-5)
        assert math.isclose(terms_ours["spatial"], terms_rel["spatial"], rel_tol=1e-5)
        # the weight gradients agree too, with the released channel weight alpha = ours · B
        params = [p for p in model.parameters()]
        g_ours = torch.autograd.grad(loss_ours, params, retain_graph=True, allow_unused=True)
        g_rel = torch.autograd.grad(6 * released.loss_channel(logits, labels)
                                    + released.loss_spatial(logits, labels, batch[3]), params,
                                    allow_unused=True)
        for p, a, b in zip(params, g_ours, g_rel):
            zero = torch.zeros_like(p)    # a parameter the loss does not reach
            torch.testing.assert_close(zero if a is None else a, zero if b is None else b,
                                       rtol=1e-4, atol=1e-6)
    finally:
        ours.remove()
        released.remove()
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


@pytest.mark.e2e
def test_benchmark_tiny_writes_report(tmp_path):
    data = make_image_folder(tmp_path / "data", num_classes=3, per_class=20, channels=1)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    results = benchmark.main(benchmark.parse_args(
        ["--tiny", "--device", "cpu", "--out_dir", str(out), "--loader_data", "digits",
         "--data_dir", str(data), "--loader_workers", "0", "--reps", "2", "--warmup", "0"]))
    assert torch.get_num_threads() == threads            # --tiny's 1 thread is undone
    assert benchmark.failed_checks(results) == []
    text = (out / "benchmark.md").read_text()
    for header in ("## Treatment step ÷ plain training step",
                   "## Treatment ÷ plain vs constrained layer",
                   "## Diagnosis with J noise draws ÷ noiseless diagnosis",
                   "## Diagnosis memory vs number of images",
                   "## Loader throughput ÷ training throughput",
                   "## In-memory data path vs per-image path vs training",
                   "## Released implementation ÷ ours",
                   "| model | layer | feature [K, H, W] | plain step ms | treatment ÷ plain |"):
        assert header in text
    saved = json.loads((out / "benchmark.json").read_text())
    ratios = [r["treat"]["median"] for r in saved["treatment"].values()]
    ratios += [r["treat_noisy"]["median"] for r in saved["treatment"].values()]
    ratios += [l["treat"]["median"] for r in saved["depth"].values() for l in r["layers"].values()]
    ratios += [r["time"]["median"] for r in saved["diagnosis"]["ratios"].values()]
    ratios += [r[k]["median"] for r in saved["data_paths"].values()
               for k in ("memory_vs_train", "folder_vs_train", "memory_vs_folder")]
    assert set(saved["data_paths"]) == {"fashion_mnist", "cifar10"}
    ratios += [saved["memory"]["ratio"], saved["loader"]["ratio"]["median"],
               saved["released"]["diagnosis"]["speedup"]["median"],
               saved["released"]["treatment"]["speedup"]["median"],
               saved["released"]["diagnosis"]["memory_ratio"]]
    assert len(ratios) >= 12 and all(math.isfinite(r) and r > 0 for r in ratios)
    assert saved["memory"]["ratio"] <= 1.2                # running sums only
    assert saved["released"]["diagnosis"]["memory_ratio"] > 1   # per-image maps kept
