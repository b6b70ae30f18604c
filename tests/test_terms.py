"""DoctorLoss as a sum of terms: the numbers of the one-class DoctorLoss it replaced, the sum
of its (weighted) terms, and the registry that turns the flags into terms."""
import pytest
import torch
import torch.nn.functional as F

import core.terms
import models
from core.channel_stats import ChannelStatistics
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm, Term
from core.kernels import KernelTerm
from core.right_reasons import RightReasonsTerm
from core.terms import TERMS, build_terms, register_term
from loaders import Batch
from toy import make_background_toy, make_toy


def _stats(net, layers, num_classes):
    stats = ChannelStatistics.for_model(net, layers, num_classes)
    gen = torch.Generator().manual_seed(0)
    for k in stats.sums:
        stats.sums[k] = torch.rand(num_classes, stats.layers[k], dtype=torch.float64,
                                   generator=gen)
    stats.counts[:] = 1
    return stats


def _case(name):
    """``(net, doctor, x, y, masks, annotated)`` of three configurations."""
    torch.manual_seed(0)
    if name == "toy":                  # channel + spatial, expanded masks, train mode
        net = make_toy(channels=3, num_classes=4).train()
        x, y = torch.randn(4, 1, 4, 4), torch.tensor([3, 1, 2, 0])
        masks, ann = (torch.rand(4, 1, 4, 4) > 0.5).float(), torch.tensor([1, 0, 1, 1]).bool()
        terms = [ChannelTerm(net, _stats(net, [0], 4), [0], 0.5),
                 SpatialTerm(net, [0], 2.0, expand_px=1)]
        return net, DoctorLoss(terms, model=net), x, y, masks, ann
    if name == "noisy":                # two layers, released options, J = 3 noisy draws
        net = models.load_model("smallcnn", 1, 4, image_size=32).train()
        x, y = torch.randn(3, 1, 32, 32), torch.tensor([0, 3, 1])
        masks, ann = (torch.rand(3, 1, 32, 32) > 0.5).float(), torch.tensor([1, 1, 0]).bool()
        terms = [ChannelTerm(net, _stats(net, [0, 1], 4), [0, 1], 1.0, grad_mode="relu",
                             second_term="mask"),
                 SpatialTerm(net, [1], 0.5)]
        return net, DoctorLoss(terms, model=net, noise_draws=3, noise_delta=0.1), x, y, masks, ann
    net, x, fg = make_background_toy()   # spatial + kernels + Ross et al.
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    terms = [SpatialTerm(net, ["conv"], 1.0),
             KernelTerm(net, (x[:3], y[:3], fg[:3]), ["conv"], 2.0), RightReasonsTerm(0.5)]
    return net, DoctorLoss(terms, model=net), x, y, fg, torch.tensor([1, 1, 0, 0, 1, 0]).bool()


# From the keyword DoctorLoss (+ WithRightReasons) of commit d3761a4 on the same cases:
# the total, the logged terms, and Σ|grad| of each parameter after (CE + total).backward().
BEFORE = {
    "toy": (6.090518951416016, {"channel": 10.289731026, "spatial": 0.47282666},
            [6.418060302734375, 7.888564586639404, 19.320086985826492]),
    "noisy": (3.0824689865112305, {"channel": 2.441941738, "spatial": 1.281054378},
              [15.058109515579417, 0.36396025284193456, 0.33341323700733483,
               134.43023398237938, 1.8589857118204236, 0.4696064409799874, 332.0898548479581,
               1.4116131232585758, 1.9597635087557137, 460.90634993157346, 3.3067077815067023,
               1.1539165115100332, 71.46391207212582, 0.6919732093811035]),
    "kernels": (30.953758239746094, {"kernel": 6.876958847, "right_reasons": 27.032234192,
                                     "spatial": 3.683723688},
                [40.58227777481079, 11.020229578018188, 105.4755744934082]),
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_same_numbers_as_the_keyword_doctor_loss(name):
    net, doctor, x, y, masks, ann = _case(name)
    doctor.start_epoch(1)
    torch.manual_seed(5)
    xin = x.clone()
    logits = doctor.forward(net, xin)
    total, logs = doctor(Batch(xin, y, [], masks, ann), xin, y, logits)
    (F.cross_entropy(logits, y) + total).backward()
    expect_total, expect_logs, expect_grads = BEFORE[name]
    assert total.item() == pytest.approx(expect_total, rel=1e-6)
    for key, value in expect_logs.items():
        assert logs[key] == pytest.approx(value, rel=1e-6)
    grads = [float(p.grad.double().abs().sum()) for p in net.parameters() if p.grad is not None]
    assert grads == pytest.approx(expect_grads, rel=1e-5)
    doctor.remove()
    assert not any(m._forward_hooks for m in net.modules())


class LogitsTerm(Term):
    """A toy term of the logits only: ``mean(logits²)``."""
    name = "logits"

    def __call__(self, ctx):
        return ctx.logits.float().pow(2).mean()

    @classmethod
    def from_args(cls, args, model, stats, annotated):
        return cls(args.logits_weight) if args.logits_weight > 0 else None


def test_doctor_loss_is_the_weighted_sum_of_its_terms():
    net, doctor, x, y, masks, ann = _case("toy")
    batch = Batch(x, y, [], masks, ann)
    terms = doctor.terms + [LogitsTerm(3.0)]
    both = DoctorLoss(terms, model=net)
    doctor.remove()
    net.eval()
    logits = both.forward(net, x)
    total, logs = both(batch, x, y, logits)
    assert set(logs) == {"channel", "spatial", "logits", "annotated"}
    torch.testing.assert_close(total, torch.tensor(0.5 * logs["channel"] + 2.0 * logs["spatial"]
                                                   + 3.0 * logs["logits"]))
    assert logs["logits"] == pytest.approx(logits.pow(2).mean().item())
    both.remove()
    for term in terms:                  # each alone gives the value logged in the sum
        with DoctorLoss([term], model=net) as alone:
            _, own = alone(batch, x, y, alone.forward(net, x))
        assert own[term.name] == pytest.approx(logs[term.name], rel=1e-6)


def test_layers_are_the_union_and_second_class_only_where_needed():
    net = models.load_model("smallcnn", 1, 4, image_size=32)
    doctor = DoctorLoss([ChannelTerm(net, _stats(net, [0], 4), [0], 1.0),
                         SpatialTerm(net, [1, 0], 1.0)], model=net)
    names = [n for n, _ in models.load_modules(net, [0, 1])]
    assert doctor.layers == names and doctor.second_layers == names[:1]
    assert doctor.hooks.names == names
    doctor.remove()
    with pytest.raises(ValueError, match="share a name"):
        DoctorLoss([SpatialTerm(net, [0], 1.0), SpatialTerm(net, [1], 1.0)], model=net)


def test_a_term_without_layers_needs_no_hooks_and_may_ask_for_input_gradients():
    net, x, fg = make_background_toy()
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    doctor = DoctorLoss([RightReasonsTerm(1.0)], model=net)
    assert doctor.hooks is None
    xin = x.clone()
    total, logs = doctor(Batch(xin, y, [], fg, torch.ones(6, dtype=torch.bool)), xin, y,
                         doctor.forward(net, xin))
    assert xin.requires_grad and total > 0 and logs["annotated"] == 1.0
    with DoctorLoss([], model=net) as empty:
        assert empty(Batch(x, y, [], fg, None), x, y, net(x)) == (0, {})


def _flags(*argv):
    import train_model_doctor
    return train_model_doctor.get_args_parser().parse_args(list(argv))


def test_build_terms_keeps_the_weighted_ones_in_registry_order():
    net, x, fg = make_background_toy()
    annotated = (x, torch.tensor([0, 1, 2, 0, 1, 2]), fg)
    stats = _stats(net, ["conv"], 3)
    args = _flags("--alpha", "0.5", "--beta", "0", "--gamma", "2", "--rrr_lambda", "0.3",
                  "--channel_layers", "conv", "--kernel_layers=conv", "--num_classes", "3")
    terms = build_terms(args, net, stats, annotated)
    assert [t.name for t in terms] == ["channel", "kernel", "right_reasons"]
    assert [t.weight for t in terms] == [0.5, 2.0, 0.3]
    off = _flags("--alpha", "0", "--beta", "0", "--gamma", "0")
    assert build_terms(off, net) == []


def test_one_registration_adds_a_term(monkeypatch):
    monkeypatch.setattr(core.terms, "TERMS", dict(TERMS))
    register_term("logits", LogitsTerm.from_args)
    with pytest.raises(ValueError, match="already registered"):
        register_term("logits", LogitsTerm.from_args)
    net = make_toy(channels=3, num_classes=4)
    args = _flags("--alpha", "0", "--beta", "1")
    args.logits_weight = 0.25
    terms = build_terms(args, net)
    assert [t.name for t in terms] == ["spatial", "logits"] and terms[1].weight == 0.25
    args.logits_weight = 0.0
    assert [t.name for t in build_terms(args, net)] == ["spatial"]


def _squeezenet_step(layers):
    """One treatment step of SqueezeNet (released CIFAR form) with +Channel and +Space at
    ``layers``; returns the caught warnings, the doctor and its loss."""
    import warnings
    torch.manual_seed(0)
    net = models.load_model("squeezenet", in_channels=1, num_classes=3, stem="small").train()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 1])
    masks, ann = (torch.rand(4, 1, 16, 16) > 0.5).float(), torch.tensor([1, 1, 0, 1]).bool()
    batch = Batch(x, y, ["a", "b", "c", "d"], masks, ann)
    terms = [ChannelTerm(net, _stats(net, layers, 3), layers, 1.0),
             SpatialTerm(net, layers, 1.0)]
    with warnings.catch_warnings(record=True) as caught, DoctorLoss(terms, model=net) as doctor:
        warnings.simplefilter("always")
        total, _ = doctor(batch, x, y, doctor.forward(net, x))
    return caught, doctor, total, net


def test_a_term_that_cannot_reach_the_weights_is_reported():
    """SqueezeNet's last conv is its classifier (1x1 conv, ReLU, average pooling): there
    dy_n/dm = 1[m > 0] / HW is piecewise constant in the weights, so the paper's constraints
    at layer 0 have no gradient and cannot change the model — said once per term. One layer
    earlier they reach the weights and nothing is said."""
    caught, doctor, total, net = _squeezenet_step([0])
    assert total.item() > 0
    if total.requires_grad:                                     # the math behind the warning
        grads = torch.autograd.grad(total, list(net.parameters()), allow_unused=True)
        assert all(g is None or not g.any() for g in grads)
    assert doctor.inert == ["channel", "spatial"]
    assert sum("cannot change the model" in str(w.message) for w in caught) == 2
    caught, doctor, total, net = _squeezenet_step([1])
    assert doctor.inert == [] and not [w for w in caught if "cannot change" in str(w.message)]
    grads = torch.autograd.grad(total, [p for p in net.parameters()], allow_unused=True)
    assert any(g is not None and g.any() for g in grads)
