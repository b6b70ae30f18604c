"""core/gradients.py: ``layer_gradients`` against plain autograd one image (and one noise
draw) at a time; the tail split against the hook fallback; second-order gradients against
finite differences; fp16 scaling; ``eval_mode``."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import core.gradients
from core.gradients import eval_mode, layer_gradients
from core.tail import split_or_none
from models import load_model, load_modules

B, J, DELTA = 3, 4, 0.3


def smallcnn():
    """``smallcnn`` in float64 and eval mode, with non-trivial BN running statistics."""
    torch.manual_seed(0)
    model = load_model("smallcnn", 3, 10, image_size=32).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def per_sample_loop(model, x, classes, layer, noise=None):
    """``[J, B, K, H, W]``: for each draw ``j`` and image ``b`` alone, the plain autograd
    gradient of ``y[n_b]`` w.r.t. the output of ``layer`` (plus ``noise[j, b]``)."""
    module = model.get_submodule(layer)
    draws = 1 if noise is None else noise.shape[0]
    rows = []
    for j in range(draws):
        for b in range(len(x)):
            seen = {}

            def hook(mod, inputs, output, j=j, b=b):
                if noise is not None:
                    output = output + noise[j, b]
                seen["m"] = output
                return output
            handle = module.register_forward_hook(hook)
            try:
                logits = model(x[b:b + 1])
            finally:
                handle.remove()
            g, = torch.autograd.grad(logits[0, classes[b]], seen["m"])
            rows.append(g[0])
    return torch.stack(rows).view(draws, len(x), *rows[0].shape)


def replay_noise(model, x, layers, seed):
    """The ``σ`` layer_gradients draws after ``torch.manual_seed(seed)``: per layer, in
    order, one ``[J·B, K, H, W]`` uniform tensor, draw-major."""
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = output.shape[1:]
        return hook
    handles = [model.get_submodule(n).register_forward_hook(record(n)) for n in layers]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    torch.manual_seed(seed)
    return {n: torch.empty(J * len(x), *shapes[n], dtype=x.dtype).uniform_(-DELTA, DELTA)
            .view(J, len(x), *shapes[n]) for n in layers}


def test_noiseless_equals_per_sample_loop():
    model = smallcnn()
    x = torch.randn(B, 3, 16, 16, dtype=torch.float64)
    labels, other = torch.tensor([1, 7, 3]), torch.tensor([4, 0, 9])
    layers = [n for n, _ in load_modules(model, [0, 2])]
    grads = layer_gradients(model, x, labels, [0, 2])
    assert list(grads) == layers
    for name in layers:
        assert grads[name].shape[:2] == (1, B)
        torch.testing.assert_close(grads[name], per_sample_loop(model, x, labels, name),
                                   rtol=1e-10, atol=1e-12)
    # two class vectors, the second at one layer only: a list of dicts, same values
    both = layer_gradients(model, x, [labels, other], [layers, layers[:1]])
    assert list(both[0]) == layers and list(both[1]) == layers[:1]
    for name in layers:
        torch.testing.assert_close(both[0][name], grads[name], rtol=0, atol=0)
    torch.testing.assert_close(both[1][layers[0]],
                               per_sample_loop(model, x, other, layers[0]),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["tail", "fallback"])
def test_noisy_draws_equal_hand_built_noisy_loop(path, monkeypatch):
    """J noisy copies per layer, the noise at that layer only: equal to one image and one
    draw at a time with the same σ added by a plain hook."""
    model = smallcnn()
    x = torch.randn(B, 3, 16, 16, dtype=torch.float64)
    labels, other = torch.tensor([2, 5, 8]), torch.tensor([0, 0, 6])
    layers = [n for n, _ in load_modules(model, [0, 2])]
    if path == "fallback":
        monkeypatch.setattr(core.gradients, "noisy_forward", lambda *a, **k: None)
    else:
        assert all(split_or_none(model, n) is not None for n in layers)
    torch.manual_seed(11)
    got = layer_gradients(model, x, [labels, other], layers, draws=J, delta=DELTA)
    noise = replay_noise(model, x, layers, seed=11)
    for name in layers:
        assert got[0][name].shape[:2] == (J, B)
        for classes, grads in zip((labels, other), got):
            torch.testing.assert_close(
                grads[name], per_sample_loop(model, x, classes, name, noise[name]),
                rtol=1e-10, atol=1e-12)
    # the draws differ (the noise matters here), so a shared draw would have been caught
    assert not torch.allclose(got[0][layers[0]][0], got[0][layers[0]][1])


def test_tail_split_equals_hook_fallback(monkeypatch):
    model = smallcnn()
    x = torch.randn(B, 3, 16, 16, dtype=torch.float64)
    labels = torch.tensor([3, 3, 1])
    layers = [n for n, _ in load_modules(model, [0, 1, 3])]

    def run():
        torch.manual_seed(2)
        return layer_gradients(model, x, labels, layers, draws=J, delta=DELTA)
    tail = run()
    monkeypatch.setattr(core.gradients, "noisy_forward", lambda *a, **k: None)
    fallback = run()
    for name in layers:
        torch.testing.assert_close(tail[name], fallback[name], rtol=1e-12, atol=1e-14)


def test_shared_head_and_recorded_forward_give_the_same_gradients():
    """``head`` (the split's head already run) and ``recorded`` (a forward already run with
    hooks) reuse a forward; the gradients equal those of the passes run inside."""
    from core.hooks import FeatureHooks
    model = smallcnn()
    x, labels = torch.randn(B, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2])
    name = load_modules(model, [1])[0][0]
    split = split_or_none(model, name)
    m, live = split.head(x)
    torch.manual_seed(4)
    shared = layer_gradients(model, x, labels, [name], draws=J, delta=DELTA,
                             head=(split, m, live))
    torch.manual_seed(4)
    inside = layer_gradients(model, x, labels, [name], draws=J, delta=DELTA)
    torch.testing.assert_close(shared[name], inside[name], rtol=1e-12, atol=1e-14)
    with FeatureHooks(model, [name]) as hooks:
        logits = model(x)
        recorded = layer_gradients(model, x, labels, [name],
                                   recorded=(logits, hooks.features))
    torch.testing.assert_close(recorded[name], layer_gradients(model, x, labels, [name])[name],
                               rtol=0, atol=0)


class Smooth(nn.Module):
    """Smooth everywhere (tanh, SiLU), so ``Σ g²`` is differentiable in the weights."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = F.silu(self.conv(torch.tanh(self.stem(x))))
        return self.fc(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("draws, delta", [(1, 0.0), (2, 0.2)])
def test_create_graph_gives_second_order_gradients(draws, delta):
    """``∂(Σ g²)/∂θ`` through ``create_graph=True`` equals central finite differences, for
    the weights before (through the head of the split), at and after the layer."""
    torch.manual_seed(0)
    model = Smooth().double().eval()
    x, labels = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.tensor([1, 3])
    params = {n: p for n, p in model.named_parameters() if n != "fc.bias"}   # g ignores it

    def objective():
        torch.manual_seed(7)       # the same σ at every evaluation
        g = layer_gradients(model, x, labels, ["conv"], draws=draws, delta=delta,
                            create_graph=True)["conv"]
        return (g ** 2).sum()
    analytic = dict(zip(params, torch.autograd.grad(objective(), list(params.values()))))
    eps = 1e-6
    for name, p in params.items():
        numeric = torch.zeros_like(p)
        with torch.no_grad():
            for i in range(p.numel()):
                flat = p.view(-1)
                flat[i] += eps
                up = objective().item()
                flat[i] -= 2 * eps
                down = objective().item()
                flat[i] += eps
                numeric.view(-1)[i] = (up - down) / (2 * eps)
        assert numeric.abs().max() > 0
        torch.testing.assert_close(analytic[name], numeric, rtol=1e-5, atol=1e-8,
                                   msg=f"{name}")


def test_fp16_maps_are_scaled_and_returned_as_float32():
    """Under fp16 autocast gradients of ~1e-8 (below fp16's smallest subnormal, 6e-8)
    survive thanks to the scale and come back as float32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        model[4].weight.mul_(4e-4 / model[4].weight.abs().max())
    x, labels = torch.randn(2, 1, 64, 64), torch.tensor([0, 2])
    reference = layer_gradients(model, x, labels, ["0"])["0"]
    assert reference.abs().max() < 1e-7
    with torch.autocast("cpu", dtype=torch.float16):
        scaled = layer_gradients(model, x, labels, ["0"])["0"]
        unscaled = layer_gradients(model, x, labels, ["0"], fp16_scale=1.0)["0"]
    assert scaled.dtype == torch.float32
    close = (scaled - reference).abs().max() / reference.abs().max()
    lost = (unscaled - reference).abs().max() / reference.abs().max()
    assert close < 0.02 and lost > 0.5


def test_passes_do_not_move_running_statistics():
    model = load_model("smallcnn", 3, 10, image_size=32).train()
    x, labels = torch.randn(B, 3, 16, 16), torch.tensor([0, 1, 2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for draws, delta in ((1, 0.0), (J, DELTA)):
        layer_gradients(model, x, labels, [0, 2], draws=draws, delta=delta)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_bad_arguments_are_refused():
    model = smallcnn()
    x, labels = torch.randn(B, 3, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="noiseless"):
        layer_gradients(model, x, labels, [0], draws=2, with_outputs=True)
    with pytest.raises(ValueError, match="2 layer lists for 1 class vectors"):
        layer_gradients(model, x, [labels], [[0], [1]])


def test_eval_mode_restores_the_flags_even_when_the_body_raises():
    model = load_model("smallcnn", 3, 10, image_size=32).train()
    model[1].eval()                                  # a mixed state is restored as it was
    flags = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model) as inside:
            assert inside is model
            assert not any(m.training for m in model.modules())
            raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == flags
    model.eval()
    with eval_mode(model):
        pass
    assert not any(m.training for m in model.modules())
