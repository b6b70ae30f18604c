"""Re-running only the tail (core/tail.py) equals re-running the whole network on J·B copies:
outputs, gradients w.r.t. the noisy map and (double backward) w.r.t. the weights, for every
registered model; the fallback when a model cannot be split; the integration in
``channel_gradients`` and ``DoctorLoss``."""
import gc
import re
import weakref

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import core.gradients
from core import tail as tail_mod
from core.channel_stats import ChannelStatistics, channel_gradients
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm
from core.hooks import FeatureHooks
from core.tail import TailSplit, split_or_none, split_reason
from loaders import Batch, PlainBatch
from models import MODELS, load_model, load_modules
from toy import make_toy

B, J, DELTA = 2, 3, 0.1
# a deeper layer (index 3) too, where the split is crossed by a residual input, concatenated
# branches or a channel shuffle; the other models at the last conv only
DEEPER = {"smallcnn", "resnet34", "senet34", "shufflenetv2"}


def close(got, expect, rel=1e-4):
    """Equal up to float32 noise relative to the largest value (per tensor)."""
    scale = expect.abs().max().item()
    assert (got - expect).abs().max().item() <= rel * scale + 1e-6, \
        f"max diff {(got - expect).abs().max().item():.3g} at scale {scale:.3g}"


def full_reexecution(model, layer, x, draws, delta):
    """The reference: the whole network on J·B copies, noise added by a forward hook."""
    with FeatureHooks(model, [layer], noise_delta=delta) as hooks:
        logits = model(x.repeat(draws, 1, 1, 1))
        return logits, hooks.features[layer]


def both_paths(model, split, layer, x, seed=5):
    """``(logits, z)`` of the full re-execution and of the tail, under the same σ (one
    ``[J·B, K, H, W]`` draw from the default generator in both)."""
    torch.manual_seed(seed)
    ref = full_reexecution(model, layer, x, J, DELTA)
    torch.manual_seed(seed)
    return ref, split.noisy_forward(x, J, DELTA)


def score_grad(logits, z, labels, create_graph=False):
    return torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), [z],
                               create_graph=create_graph)[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tail_equals_full_reexecution(name):
    """Noisy logits and ``∂y_n/∂z`` (the statistics of Eq. 4) at the last conv."""
    torch.manual_seed(0)
    model = load_model(name, 3, 10, image_size=32).eval().requires_grad_(False)
    x, labels = torch.randn(B, 3, 32, 32), torch.tensor([1, 7]).repeat(J)
    calls = sum(n.op == "call_module" for n in fx.symbolic_trace(model).graph.nodes)
    for index in (0, 3) if name in DEEPER else (0,):
        layer = load_modules(model, [index])[0][0]
        split = split_or_none(model, layer)
        assert split is not None, split_reason(model, layer)
        # every module call runs once, in the head or in the tail: nothing recomputed
        halves = [split.head_module, split.tail_module]
        assert sum(n.op == "call_module" for h in halves for n in h.graph.nodes) == calls
        (ref_logits, ref_z), (logits, z) = both_paths(model, split, layer, x)
        close(z, ref_z)
        close(logits, ref_logits)
        close(score_grad(logits, z, labels), score_grad(ref_logits, ref_z, labels))


@pytest.mark.parametrize("name, index", [("smallcnn", 3), ("crossing", 0)])
def test_double_backward_to_the_weights_equals_full_reexecution(name, index):
    """As ``DoctorLoss`` uses it: ``∂y_n/∂z`` with ``create_graph=True``, then the weights'
    gradients of ``Σ|∂y_n/∂z|``; with a SiLU in the tail (toy) they reach the head's
    weights through the repeated map."""
    torch.manual_seed(0)
    if name == "crossing":
        model, x = Crossing().eval(), torch.randn(B, 1, 4, 4)
    else:
        model, x = load_model(name, 3, 10, image_size=32).eval(), torch.randn(B, 3, 32, 32)
    labels = torch.tensor([1, 3]).repeat(J)
    params = list(model.parameters())
    layer = load_modules(model, [index])[0][0]
    paths = both_paths(model, split_or_none(model, layer), layer, x)
    (g_ref, w_ref), (g, w) = [
        (gz, torch.autograd.grad(gz.abs().sum(), params, allow_unused=True,
                                 materialize_grads=True))
        for gz in (score_grad(lg, z, labels, create_graph=True) for lg, z in paths)]
    close(g, g_ref)
    for a, b in zip(w, w_ref):
        close(a, b)
    if name == "crossing":
        assert params[0] is model.stem.weight and w[0].abs().sum() > 0    # head reached


def test_channel_gradients_use_the_tail_and_match_fallback(monkeypatch):
    torch.manual_seed(0)
    model = load_model("smallcnn", 3, 10, image_size=32).eval()
    for p in model.parameters():      # as grad_calculate does: z must become the leaf
        p.requires_grad_(False)
    x, labels = torch.randn(B, 3, 32, 32), torch.tensor([3, 4])
    layers = [n for n, _ in load_modules(model, [0, 3])]
    runs, original = [], TailSplit.noisy_forward

    def spy(self, *args, **kwargs):
        runs.append(self.layer)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(TailSplit, "noisy_forward", spy)
    torch.manual_seed(9)
    fast = channel_gradients(model, x, labels, layers, J, DELTA)
    assert runs == layers
    monkeypatch.setattr(core.gradients, "noisy_forward", lambda *a, **k: None)
    torch.manual_seed(9)
    slow = channel_gradients(model, x, labels, layers, J, DELTA)
    for layer in layers:
        close(fast[layer], slow[layer])


def _doctor(model, layer):
    stats = ChannelStatistics({layer: model.get_submodule(layer).out_channels}, 10)
    stats.sums[layer] = torch.rand(10, stats.layers[layer], dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(0))
    stats.counts[:] = 1
    return DoctorLoss([ChannelTerm(model, stats, [layer], 1.0), SpatialTerm(model, [layer], 1.0)],
                      model=model, noise_draws=J, noise_delta=0.2)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_doctor_loss_tail_matches_fallback(mode, monkeypatch):
    """In train mode too: BN statistics over B equal those over J identical copies."""
    x, labels = torch.randn(B, 3, 32, 32), torch.tensor([0, 5])
    batch = Batch(x, labels, [], torch.zeros(B, 1, 32, 32), torch.tensor([True, True]))

    def run():
        torch.manual_seed(0)
        model = load_model("smallcnn", 3, 10, image_size=32).train(mode == "train")
        layer = load_modules(model, [1])[0][0]
        doctor = _doctor(model, layer)
        torch.manual_seed(3)
        logits = model(x)
        total, terms = doctor(batch, x, labels, logits)
        (F.cross_entropy(logits, labels) + total).backward()
        doctor.remove()
        return total, [p.grad for p in model.parameters()]

    fast, fast_grads = run()
    monkeypatch.setattr(core.gradients, "noisy_forward", lambda *a, **k: None)
    slow, slow_grads = run()
    close(fast, slow)
    for a, b in zip(fast_grads, slow_grads):
        close(a, b)


# -- toy models: fallback, values crossing the split, cache --------------------------------

class DataDependent(nn.Module):
    """Python control flow on a tensor value: symbolic tracing fails."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = self.conv(x)
        if x.sum() > 0:
            h = h * 2
        return self.fc(h.relu().mean((2, 3)))


class Crossing(nn.Module):
    """A skip from the input and a batch size read before the conv, both used after it;
    a SiLU after the conv, so ``∂y/∂z`` depends on ``z``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 16, 4)

    def forward(self, x):
        b = x.size(0)
        h = self.stem(x).relu()
        h = F.silu(self.conv(h)) + h + x
        return self.fc(h.reshape(b, -1))


class BatchMean(nn.Module):
    """A value with no batch dim (the batch mean) crosses the split."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        s = x.mean()
        return self.fc(self.conv(x).relu().mean((2, 3)) * s)


def _reference_a(model, x, labels, layer, seed):
    torch.manual_seed(seed)
    logits, z = full_reexecution(model, layer, x, J, DELTA)
    g, = torch.autograd.grad(logits.gather(1, labels.repeat(J)[:, None]).sum(), [z])
    return g.abs().sum((2, 3)).view(J, len(x), -1).mean(0)


@pytest.mark.parametrize("net, reason", [(DataDependent, "cannot trace"),
                                         (BatchMean, "not a \\[B, ...\\] tensor")])
def test_fallback_when_the_model_cannot_be_split(net, reason, caplog):
    torch.manual_seed(0)
    model = net().eval()
    x, labels = torch.randn(B, 1, 4, 4) + 0.5, torch.tensor([1, 2])
    torch.manual_seed(4)
    a = channel_gradients(model, x, labels, ["conv"], J, DELTA)["conv"]
    assert tail_mod.noisy_forward(model, "conv", x, J, DELTA) is None
    assert re.search(reason, split_reason(model, "conv"))
    assert "no tail split" in caplog.text
    close(a, _reference_a(model, x, labels, "conv", seed=4))


def test_values_crossing_the_split_are_carried_or_recomputed():
    torch.manual_seed(0)
    model = Crossing().eval()
    x, labels = torch.randn(B, 1, 4, 4), torch.tensor([0, 3])
    split = split_or_none(model, "conv")
    # the stem output and the input cross (repeated J times); the batch size is re-read in
    # the tail, where it is J·B
    assert split.live == ["x", "relu"]
    torch.manual_seed(4)
    a = channel_gradients(model, x, labels, ["conv"], J, DELTA)["conv"]
    close(a, _reference_a(model, x, labels, "conv", seed=4))


def test_cache_is_per_mode_and_weak():
    model = make_toy()
    split = split_or_none(model, 0)
    assert split is split_or_none(model, "conv")
    model.train()
    assert split_or_none(model, 0) is not split
    assert split_reason(model, 0) is None
    ref = weakref.ref(model)
    del model, split
    gc.collect()
    assert ref() is None       # the cache does not keep the model alive


@pytest.mark.parametrize("name", ["smallcnn", "resnet34"])
def test_doctor_forward_shares_the_head_with_the_noisy_draws(name):
    """The training forward through DoctorLoss.forward (head + tail, head reused by the J
    noisy copies) gives the same logits, loss terms and weight gradients as a plain forward
    followed by a separate noisy pass."""
    torch.manual_seed(0)
    net = load_model(name, 1, 4, image_size=32).eval()
    stats = ChannelStatistics.for_model(net, [0], 4)
    stats.sums[next(iter(stats.sums))] = torch.rand(4, stats.layers[next(iter(stats.layers))],
                                                    dtype=torch.float64)
    stats.counts[:] = 1
    doctor = DoctorLoss([ChannelTerm(net, stats, [0], 1.0)], model=net, noise_draws=3,
                        noise_delta=0.1)
    x, y = torch.randn(2, 1, 32, 32), torch.tensor([0, 3])
    results = []
    for shared in (True, False):
        net.zero_grad()
        logits = doctor.forward(net, x) if shared else net(x)
        assert (doctor._shared is not None) == shared
        torch.manual_seed(5)
        total, terms = doctor(PlainBatch(x, y, []), x, y, logits)
        (F.cross_entropy(logits, y) + total).backward()
        results.append((logits.detach(), terms["channel"],
                        [p.grad.clone() for p in net.parameters()]))
    (l1, c1, g1), (l2, c2, g2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    assert c1 == pytest.approx(c2, rel=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    doctor.remove()


@pytest.mark.parametrize("path", ["shared", "tail", "fallback"])
def test_noisy_treatment_does_not_move_bn_running_stats(path, monkeypatch):
    """After one treatment step with J > 1, δ > 0 in train mode, every BN's running mean,
    variance and batch count equal those after the plain training forward alone."""
    import copy
    torch.manual_seed(0)
    model = load_model("smallcnn", 3, 10, image_size=32).train()
    layer = load_modules(model, [1])[0][0]          # BNs before and after the split
    reference = copy.deepcopy(model)
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 5, 2, 7])
    reference(x)                                    # the plain forward only
    if path == "fallback":
        monkeypatch.setattr(core.gradients, "noisy_forward", lambda *a, **k: None)
    doctor = _doctor(model, layer)
    logits = doctor.forward(model, x) if path == "shared" else model(x)
    assert (doctor._shared is not None) == (path == "shared")
    total, _ = doctor(Batch(x, labels, [], torch.zeros(4, 1, 32, 32), torch.ones(4, dtype=bool)),
                      x, labels, logits)
    (F.cross_entropy(logits, labels) + total).backward()
    doctor.remove()
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bns) == 4
    for name, ref in reference.named_modules():
        if name in bns:
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                torch.testing.assert_close(getattr(bns[name], buf), getattr(ref, buf),
                                           rtol=1e-6, atol=1e-7, msg=f"{name}.{buf}")
            assert bns[name].track_running_stats
