"""Treatment losses against hand-computed values, scale, and that they train the weights."""
import pytest
import torch
import torch.nn.functional as F

from core.channel_stats import ChannelStatistics, rectify
from core.grad_constraint import (ChannelTerm, DoctorLoss, SpatialTerm, background_weights,
                                  channel_loss, dilate, second_class, spatial_loss)
from core.kernels import KernelTerm, kernel_background_share, kernel_loss
from core.right_reasons import RightReasonsTerm
from core.hooks import FeatureHooks
from loaders import Batch, PlainBatch
from toy import conv_out, make_background_toy, make_toy


def toy_grads(net, x, classes):
    """Autograd ∂y_c/∂m for the toy net (per sample, one backward pass)."""
    with FeatureHooks(net, ["conv"]) as hooks:
        logits = net(x)
        return torch.autograd.grad(logits.gather(1, classes[:, None]).sum(),
                                   hooks.features["conv"])[0], logits


def test_second_class():
    logits = torch.tensor([[5.0, 3.0, 1.0], [0.0, 2.0, 9.0], [1.0, 7.0, 4.0]])
    labels = torch.tensor([0, 1, 2])
    # right: top-2 (1); wrong: top-1 (2); wrong: top-1 (1)
    assert second_class(logits, labels).tolist() == [1, 2, 1]


@pytest.mark.parametrize("grad_mode", ["abs", "relu"])
@pytest.mark.parametrize("second_term", ["all", "mask"])
def test_channel_loss_by_hand(grad_mode, second_term):
    net = make_toy(channels=3, num_classes=4)
    x = torch.randn(4, 1, 3, 3)
    labels = torch.tensor([0, 1, 2, 3])
    mask = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    g_true, logits = toy_grads(net, x, labels)
    second = second_class(logits, labels)
    g_second, _ = toy_grads(net, x, second)
    loss = channel_loss(g_true, g_second, mask, labels, second, grad_mode, second_term)
    # closed form: Σ_hw c(∂y_n/∂m_k) = c(W[n,k]) · #(m_k > 0)
    active = (conv_out(net, x) > 0).float().sum(dim=(2, 3))          # [B, K]
    w = net.fc.weight.detach()
    expect = 0.0
    for b in range(4):
        n, s = labels[b].item(), second[b].item()
        for k in range(3):
            expect += (1 - mask[n, k]) * rectify(w[n, k], grad_mode) * active[b, k]
            ws = mask[s, k] if second_term == "mask" else 1.0
            expect += ws * rectify(w[s, k], grad_mode) * active[b, k]
    torch.testing.assert_close(loss, torch.as_tensor(expect / 4, dtype=loss.dtype))


def test_channel_loss_scale_matches_released_times_batch():
    net = make_toy()
    x, labels = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    mask = (torch.rand(4, 3) > 0.5).float()
    g_true, logits = toy_grads(net, x, labels)
    second = second_class(logits, labels)
    g_second, _ = toy_grads(net, x, second)
    ours = channel_loss(g_true, g_second, mask, labels, second, "relu", "mask")
    # released: gradient of the batch-MEAN logit, then per-sample penalties averaged again
    with FeatureHooks(net, ["conv"]) as hooks:
        out = net(x)
        feats = hooks.features["conv"]
        gt = torch.autograd.grad(out.gather(1, labels[:, None]).mean(), feats, retain_graph=True)[0]
        gs = torch.autograd.grad(out.gather(1, second[:, None]).mean(), feats)[0]
    pen = ((1 - mask[labels]) * gt.clamp(min=0).sum((2, 3))).sum(1) \
        + (mask[second] * gs.clamp(min=0).sum((2, 3))).sum(1)
    torch.testing.assert_close(ours, pen.mean() * len(x))


def test_spatial_loss_by_hand():
    net = make_toy(channels=2)
    x = torch.randn(2, 1, 4, 4)
    labels = torch.tensor([1, 3])
    g, _ = toy_grads(net, x, labels)
    fg = torch.zeros(2, 1, 4, 4)
    fg[:, :, 1:3, 1:3] = 1
    bg = background_weights(fg, torch.tensor([True, False]))
    loss = spatial_loss(g, bg)
    m = conv_out(net, x)
    w = net.fc.weight.detach()
    expect = sum(abs(w[1, k]) * ((m[0, k] > 0).float() * (1 - fg[0, 0])).sum() for k in range(2)) / 2
    torch.testing.assert_close(loss, expect)
    # all-foreground masks, or no annotation at all: zero
    assert spatial_loss(g, background_weights(torch.ones(2, 1, 4, 4), torch.tensor([True, True]))) == 0
    assert spatial_loss(g, background_weights(fg, torch.tensor([False, False]))) == 0


def test_ignored_pixels_weigh_zero_by_hand():
    """Mask codes 1 = object, 0 = background, 2 = ignore (labelme ``__ignore__``)."""
    masks = torch.zeros(1, 1, 4, 5)
    masks[0, 0, 1, 1] = 1            # one object pixel
    masks[0, 0, 3, :] = 2            # an ignored bottom row
    masks[0, 0, 1, 3] = 2            # an ignored pixel next to background
    annotated = torch.tensor([True])
    expect = torch.tensor([[1., 1., 1., 1., 1.],
                           [1., 0., 1., 0., 1.],
                           [1., 1., 1., 1., 1.],
                           [0., 0., 0., 0., 0.]])
    torch.testing.assert_close(background_weights(masks, annotated)[0, 0], expect)
    # e = 1 dilates the object (a plus shape), never the ignored pixels
    expect1 = torch.tensor([[1., 0., 1., 1., 1.],
                            [0., 0., 0., 0., 1.],
                            [1., 0., 1., 1., 1.],
                            [0., 0., 0., 0., 0.]])
    torch.testing.assert_close(background_weights(masks, annotated, 1)[0, 0], expect1)
    g = torch.arange(20.).view(1, 1, 4, 5)          # |∂y/∂m| = 0..19, one channel
    assert spatial_loss(g, background_weights(masks, annotated)).item() == \
        pytest.approx(sum(range(0, 15)) - 6 - 8)    # rows 0-2 minus pixels (1,1), (1,3)


def test_spatial_background_resized_by_area():
    g = torch.ones(1, 1, 2, 2)
    bg = torch.zeros(1, 1, 4, 4)
    bg[..., :2, :2] = 1          # the top-left cell is all background
    bg[..., 2, 2] = 1            # a quarter of the bottom-right cell
    assert spatial_loss(g, bg).item() == pytest.approx(1.25)


def test_dilation_is_exact_euclidean():
    mask = torch.zeros(1, 1, 41, 41)
    mask[..., 18:23, 18:23] = 1       # a 5x5 square
    for e in (0, 1, 3, 7):
        got = dilate(mask, e)[0, 0]
        yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
        dy = (18 - yy).clamp(min=0) + (yy - 22).clamp(min=0)
        dx = (18 - xx).clamp(min=0) + (xx - 22).clamp(min=0)
        expect = (dy ** 2 + dx ** 2 <= e ** 2).float()
        torch.testing.assert_close(got, expect)


def _doctor_setup(alpha, beta, expand_px=0, **kw):
    net = make_toy(channels=3, num_classes=4).train()
    stats = ChannelStatistics({"conv": 3}, 4)
    stats.sums["conv"] = torch.rand(4, 3, dtype=torch.float64)
    stats.counts[:] = 1
    terms = [ChannelTerm(net, stats, [0], alpha)]
    if beta > 0:
        terms.append(SpatialTerm(net, [0], beta, expand_px=expand_px))
    return net, DoctorLoss(terms, model=net, **kw)


def _param_grads(net, loss_fn, x, labels, batch):
    net.zero_grad()
    logits = net(x)
    loss = F.cross_entropy(logits, labels)
    if loss_fn is not None:
        loss = loss + loss_fn(batch, x, labels, logits)[0]
    loss.backward()
    return [p.grad.clone() for p in net.parameters()]


def test_constraint_reaches_the_weights():
    torch.manual_seed(0)
    x, labels = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    masks = torch.zeros(4, 1, 4, 4)
    batch = Batch(x, labels, ["p"] * 4, masks, torch.tensor([True] * 4))
    net, doctor = _doctor_setup(alpha=1.0, beta=1.0)
    with_c = _param_grads(net, doctor, x, labels, batch)
    plain = _param_grads(net, None, x, labels, batch)
    # fc.weight gets extra gradient only through create_graph=True
    assert not torch.allclose(with_c[-1], plain[-1])
    doctor.remove()
    assert not net.conv._forward_hooks


def test_doctor_loss_terms_equal_pure_functions():
    torch.manual_seed(1)
    x, labels = torch.randn(4, 1, 4, 4), torch.tensor([3, 1, 2, 0])
    masks = (torch.rand(4, 1, 4, 4) > 0.5).float()
    annotated = torch.tensor([True, False, True, True])
    net, doctor = _doctor_setup(alpha=0.5, beta=2.0, expand_px=1)
    logits = net(x)
    total, terms = doctor(Batch(x, labels, [], masks, annotated), x, labels, logits)
    net.eval()
    g_true, lg = toy_grads(net, x, labels)
    second = second_class(lg, labels)
    g_second, _ = toy_grads(net, x, second)
    l_ch = channel_loss(g_true, g_second, doctor.term("channel").masks["conv"], labels, second)
    l_sp = spatial_loss(g_true, background_weights(masks, annotated, 1))
    assert terms["channel"] == pytest.approx(l_ch.item(), rel=1e-5)
    assert terms["spatial"] == pytest.approx(l_sp.item(), rel=1e-5)
    torch.testing.assert_close(total, 0.5 * l_ch + 2.0 * l_sp)


def test_noisy_treatment_averages_draws():
    torch.manual_seed(2)
    x, labels = 0.05 * torch.randn(3, 1, 4, 4), torch.tensor([0, 1, 2])
    net, doctor = _doctor_setup(alpha=1.0, beta=0.0, noise_draws=5, noise_delta=0.2)
    net.eval()
    logits = net(x)
    torch.manual_seed(7)
    total, terms = doctor(PlainBatch(x, labels, []), x, labels, logits)
    torch.manual_seed(7)
    noise = torch.empty(15, 3, 4, 4).uniform_(-0.2, 0.2).view(5, 3, 3, 4, 4)
    m = conv_out(net, x)
    active = (m[None] + noise > 0).float().sum(dim=(-2, -1)).mean(0)      # [B, K]
    w = net.fc.weight.detach().abs()
    second = second_class(logits, labels)
    mask = doctor.term("channel").masks["conv"]
    expect = (((1 - mask[labels]) * w[labels] + w[second]) * active).sum(1).mean()
    assert terms["channel"] == pytest.approx(expect.item(), rel=1e-5)
    assert doctor.hooks.enabled


def test_bf16_autocast_constraint_is_finite_and_close():
    """Mixed precision on CPU: the constraint under bf16 autocast stays finite and near fp32."""
    import models
    torch.manual_seed(0)
    net = models.load_model("smallcnn", 1, 4, image_size=32).eval()
    stats = ChannelStatistics.for_model(net, [0], 4)
    stats.sums[next(iter(stats.sums))] = torch.rand(4, 128, dtype=torch.float64)
    stats.counts[:] = 1
    doctor = DoctorLoss([ChannelTerm(net, stats, [0], 1.0), SpatialTerm(net, [0], 1.0)],
                        model=net)
    x, labels = torch.randn(6, 1, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    batch = Batch(x, labels, [], (torch.rand(6, 1, 32, 32) > 0.5).float(),
                  torch.ones(6, dtype=torch.bool))
    terms = {}
    for dtype in (None, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = net(x)
            total, terms[dtype] = doctor(batch, x, labels, logits)
        assert torch.isfinite(total) and total.dtype == torch.float32
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        net.zero_grad()
    for key in ("channel", "spatial"):
        assert terms[torch.bfloat16][key] == pytest.approx(terms[None][key], rel=0.05)
    doctor.remove()


# ------------------------------------------------ background kernels (not in the paper)

def test_kernel_background_share_by_hand():
    g = torch.zeros(2, 2, 2, 2)
    g[0, 0] = torch.tensor([[1.0, -3.0], [0.0, 0.0]])
    g[1, 0] = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    g[:, 1] = -1.0
    bg = torch.zeros(2, 1, 2, 2)
    bg[0, 0, 0, 1] = 1.0               # image 0: background is the top-right pixel
    bg[1, 0, 1] = 0.5                  # image 1: half-weight bottom row
    share = kernel_background_share(g, bg)
    # kernel 0: (3 + 0.5·2 + 0.5·2) / (1 + 3 + 2 + 2); kernel 1: (1 + 0.5 + 0.5) / 8
    torch.testing.assert_close(share, torch.tensor([5 / 8, 2 / 8]))
    # area-resized background: a 4x4 mask onto the 2x2 map
    big = torch.zeros(2, 1, 4, 4)
    big[0, 0, :2, 2:] = 1.0
    big[1, 0, 2:] = 0.5
    torch.testing.assert_close(kernel_background_share(g, big), share)
    assert kernel_background_share(torch.zeros(1, 3, 2, 2), bg[:1]).tolist() == [0, 0, 0]


def test_kernel_loss_by_hand():
    net = make_toy(channels=3, num_classes=4)
    x = torch.randn(5, 1, 4, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    g, _ = toy_grads(net, x, labels)
    kernels = torch.tensor([1.0, 0.0, 1.0])
    active = (conv_out(net, x) > 0).float().sum(dim=(2, 3))          # [B, K]
    w = net.fc.weight.detach()
    expect = sum(kernels[k] * w[labels[b], k].abs() * active[b, k]
                 for b in range(5) for k in range(3)) / 5
    torch.testing.assert_close(kernel_loss(g, kernels), torch.as_tensor(expect))
    # J noise draws in front: the mean over draws and images
    torch.testing.assert_close(kernel_loss(torch.stack([g, 3 * g]), kernels),
                               torch.as_tensor(2 * expect))


def test_find_kernels_picks_the_background_kernel_and_restores_mode():
    net, x, fg = make_background_toy()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    net.train()
    term = KernelTerm(net, (x, labels, fg), ("conv",), 1.0, tau=0.5)
    doctor = DoctorLoss([term], model=net)
    kernels = term.find_kernels(chunk=4)         # two chunks: sums must be pooled
    assert kernels["conv"].tolist() == [1.0, 0.0]
    assert net.training and doctor.hooks.enabled
    assert doctor.start_epoch(1) == {"kernels/conv": 1}
    doctor.remove()


def test_kernel_term_trains_only_the_background_kernel():
    net, x, fg = make_background_toy()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    doctor = DoctorLoss([KernelTerm(net, (x[:3], labels[:3], fg[:3]), ("conv",), 2.0)],
                        model=net)
    doctor.start_epoch(1)
    logits = net(x)
    total, terms = doctor(PlainBatch(x, labels, []), x, labels, logits)
    g, _ = toy_grads(net, x, labels)
    expect = kernel_loss(g, torch.tensor([1.0, 0.0]))
    assert terms["kernel"] == pytest.approx(expect.item())
    torch.testing.assert_close(total, 2.0 * expect)
    grad = torch.autograd.grad(total, net.fc.weight)[0]
    assert (grad[:, 0] != 0).all() and (grad[:, 1] == 0).all()
    doctor.remove()


def test_kernel_term_needs_annotations():
    with pytest.raises(ValueError, match="annotated"):
        KernelTerm(make_toy(), None, ("conv",), 1.0)


def test_right_reasons_loss_by_hand_and_trains_weights():
    from core.right_reasons import right_reasons_loss
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 1, 2, 2, requires_grad=True)
    logits = lin(x.flatten(1))
    bg = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    loss = right_reasons_loss(logits, x, bg)
    # ∂/∂x Σ_k log p_k = W^T (1 - C·p) for a linear model
    p = torch.softmax(logits.detach(), 1)
    gx = (1 - 3 * p) @ lin.weight.detach()                          # [B, 4]
    expect = ((bg.view(2, 4) * gx) ** 2).sum(1).mean()
    torch.testing.assert_close(loss, expect)
    assert torch.autograd.grad(loss, lin.weight)[0].abs().sum() > 0
    flat = torch.nn.Sequential(torch.nn.Flatten(), lin)
    rrr = DoctorLoss([RightReasonsTerm(2.0)], model=flat)
    out = rrr.forward(flat, x.detach().clone())
    fg = 1 - bg
    total, terms = rrr(Batch(None, None, None, fg, torch.tensor([True, False])), x, None, out)
    torch.testing.assert_close(total, 2.0 * expect)     # image 1 unannotated: 0
    # --expand_px: the object grows by one pixel before the background is taken
    obj = torch.zeros(2, 1, 5, 5)
    obj[:, :, 2, 2] = 1
    xs = torch.randn(2, 1, 5, 5)
    lin5 = torch.nn.Linear(25, 3)
    grown = torch.ones(2, 1, 5, 5)           # a radius-1 disk: the pixel and its 4 neighbours
    for r, c in ((2, 2), (1, 2), (3, 2), (2, 1), (2, 3)):
        grown[:, :, r, c] = 0
    grown = grown * torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)        # image 1 unannotated
    for expand, bg5 in ((0, (1 - obj) * torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)), (1, grown)):
        flat5 = torch.nn.Sequential(torch.nn.Flatten(), lin5)
        rrr = DoctorLoss([RightReasonsTerm(1.0, expand_px=expand)], model=flat5)
        xin = xs.clone()
        out = rrr.forward(flat5, xin)
        total, _ = rrr(Batch(xin, None, [], obj, torch.tensor([True, False])), xin, None, out)
        torch.testing.assert_close(total, right_reasons_loss(out, xin, bg5))


def test_right_reasons_added_to_the_kernel_term_is_the_sum_of_both():
    from core.right_reasons import right_reasons_loss
    net, x, fg = make_background_toy()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    annotated = torch.tensor([True, True, False, False, True, False])
    batch = Batch(x, labels, [], fg, annotated)

    def doctor(*extra):
        d = DoctorLoss([KernelTerm(net, (x[:3], labels[:3], fg[:3]), ("conv",), 2.0), *extra],
                       model=net)
        d.start_epoch(1)
        return d
    alone = doctor()
    k_total, _ = alone(batch, x, labels, alone.forward(net, x))
    alone.remove()
    both = doctor(RightReasonsTerm(0.5))
    xin = x.clone()
    logits = both.forward(net, xin)
    total, terms = both(batch, xin, labels, logits)
    bg = (1 - fg) * annotated.float().view(-1, 1, 1, 1)
    expect = k_total + 0.5 * right_reasons_loss(logits, xin, bg)
    torch.testing.assert_close(total, expect)
    assert {"kernel", "right_reasons"} <= set(terms)
    assert torch.autograd.grad(total, net.conv.weight)[0].abs().sum() > 0
    both.remove()
    assert not net.conv._forward_hooks


def test_find_kernels_takes_rank_zeros_kernels_under_ddp(monkeypatch):
    import torch.distributed as dist
    net, x, fg = make_background_toy()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    calls = []

    def broadcast(tensor, src):      # rank 0 found kernel 1 only
        calls.append(src)
        tensor.copy_(torch.tensor([0.0, 1.0]))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "broadcast", broadcast)
    term = KernelTerm(net, (x, labels, fg), ("conv",), 1.0)
    doctor = DoctorLoss([term], model=net)
    assert term.find_kernels()["conv"].tolist() == [0.0, 1.0]     # this rank alone: [1, 0]
    assert calls == [0]
    doctor.remove()


def kernel_args(**kw):
    """The kernel flags of train_model_doctor.py at their defaults, with ``kw`` changed."""
    import train_model_doctor
    return train_model_doctor.get_args_parser().parse_args(
        [f"--{k}={v}" for k, v in kw.items() if not isinstance(v, bool)]
        + [f"--{k}" for k, v in kw.items() if v is True])


def test_kernel_reinit_renews_only_the_background_kernel_once():
    net, x, fg = make_background_toy()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    before_w, before_b = net.conv.weight.detach().clone(), net.conv.bias.detach().clone()
    doctor = DoctorLoss([KernelTerm(net, (x, labels, fg), ("conv",), 1.0, reinit=True)],
                        model=net)
    torch.manual_seed(3)
    assert doctor.start_epoch(1) == {"kernels/conv": 1}
    torch.manual_seed(3)                          # the fresh draw: Kaiming normal, fan-out
    fresh = torch.empty_like(before_w)
    torch.nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu")
    torch.testing.assert_close(net.conv.weight[0], fresh[0])        # background kernel
    torch.testing.assert_close(net.conv.weight[1], before_w[1])     # object kernel kept
    torch.testing.assert_close(net.conv.bias, torch.stack([torch.tensor(0.0), before_b[1]]))
    after = net.conv.weight.detach().clone()
    doctor.start_epoch(2)                          # later epochs (and a resumed run): no more
    torch.testing.assert_close(net.conv.weight, after)
    doctor.remove()
    with pytest.raises(ValueError, match="gamma"):
        KernelTerm.from_args(kernel_args(gamma=0.0, kernel_reinit=True), net, None,
                             (x, labels, fg))


def test_kernel_reinit_random_renews_as_many_kernels_drawn_at_random():
    net, x, fg = make_background_toy()       # 2 kernels, kernel 0 the background one
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    before = net.conv.weight.detach().clone()
    renewed = set()
    for seed in range(8):
        net.conv.weight.data.copy_(before)
        term = KernelTerm(net, (x, labels, fg), ("conv",), 1.0, reinit=True,
                          reinit_random=True)
        doctor = DoctorLoss([term], model=net)
        torch.manual_seed(seed)
        assert doctor.start_epoch(1) == {"kernels/conv": 1}   # the constraint's kernels
        torch.manual_seed(seed)                 # the draw: one of two, then the fresh weights
        pick = int(torch.randperm(2)[0])
        fresh = torch.empty_like(before)
        torch.nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu")
        torch.testing.assert_close(net.conv.weight[pick], fresh[pick])
        torch.testing.assert_close(net.conv.weight[1 - pick], before[1 - pick])
        assert term.kernels["conv"].tolist() == [1.0, 0.0]    # suppressed: still the found one
        renewed.add(pick)
        doctor.remove()
    assert renewed == {0, 1}
    with pytest.raises(ValueError, match="kernel_reinit"):
        KernelTerm(net, (x, labels, fg), ("conv",), 1.0, reinit_random=True)
    with pytest.raises(ValueError, match="kernel_reinit"):
        KernelTerm.from_args(kernel_args(gamma=0.0, kernel_reinit_random=True), net, None,
                             (x, labels, fg))
