"""The background kernels: the share, excess and rank rules on hand-built cases."""
import pytest
import torch

from core.grad_constraint import DoctorLoss, background_weights
from core.kernels import (KernelTerm, background_area, flag_kernels, kernel_background_share,
                          reinit_kernels)
from toy import make_toy


def diffuse_and_background_toy():
    """2 kernels on a 4 × 4 image whose object is the centre 2 × 2 (background: 12/16).
    Kernel 0 sees input channel 0, 1 everywhere: its gradient is spread evenly
    (``share_0 = 12/16``). Kernel 1 sees channel 1, 1 on the background only
    (``share_1 = 1``). ToyNet: ``∂y_n/∂m_k = W[n,k] · 1[m_k > 0]``."""
    net = make_toy(in_channels=2, channels=2, num_classes=3)
    with torch.no_grad():
        net.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        net.conv.bias.fill_(-0.1)
    fg = torch.zeros(4, 1, 4, 4)
    fg[:, :, 1:3, 1:3] = 1.0
    x = torch.cat([torch.ones_like(fg), 1.0 - fg], dim=1)
    return net, (x, torch.tensor([0, 1, 2, 0]), fg)


def test_share_and_area_of_the_hand_built_case():
    net, (x, labels, fg) = diffuse_and_background_toy()
    term = KernelTerm(net, (x, labels, fg), ("conv",), 1.0)
    term.find_kernels()
    assert term.area["conv"] == pytest.approx(12 / 16)
    bg = background_weights(fg, torch.ones(4, dtype=torch.bool))
    with torch.enable_grad():
        from core.gradients import layer_gradients
        g = layer_gradients(net, x, labels, ["conv"])["conv"][0]
    torch.testing.assert_close(kernel_background_share(g, bg), torch.tensor([12 / 16, 1.0]))


@pytest.mark.parametrize("rule, expect", [("share", [1.0, 1.0]), ("excess", [0.0, 1.0]),
                                          ("rank", [0.0, 1.0])])
def test_rules_flag_the_kernel_that_concentrates_on_the_background(rule, expect):
    net, annotated = diffuse_and_background_toy()
    term = KernelTerm(net, annotated, ("conv",), 1.0, rule=rule, tau=0.5, tau_excess=0.1,
                      top=0.5)
    doctor = DoctorLoss([term], model=net)
    assert doctor.start_epoch(1) == {"kernels/conv": int(sum(expect))}
    assert term.kernels["conv"].tolist() == expect
    doctor.remove()


def test_area_follows_the_expansion():
    """``expand_px = 1`` grows the centre 2 × 2 into a plus of 12 cells: 4 corners remain."""
    net, annotated = diffuse_and_background_toy()
    term = KernelTerm(net, annotated, ("conv",), 1.0, expand_px=1, rule="excess")
    term.find_kernels(chunk=3)                   # two chunks: areas pooled by cell count
    assert term.area["conv"] == pytest.approx(4 / 16)


def test_background_area_at_a_coarser_resolution():
    bg = torch.zeros(2, 1, 4, 4)
    bg[0, 0, :2, :2] = 1.0                       # one whole cell of the 2 × 2 grid
    bg[1, 0, 3, 3] = 1.0                         # a quarter of a cell
    total, cells = background_area(bg, (2, 2))
    assert (total, cells) == (pytest.approx(1.25), 8)
    assert total / cells == pytest.approx(bg.mean().item())


def test_flag_kernels_by_hand():
    share = torch.tensor([0.9, 0.7, 0.65, 0.2])
    area = 0.5                                    # excess: 0.4, 0.2, 0.15, -0.3
    assert flag_kernels(share, area, "share", tau=0.5).tolist() == [1, 1, 1, 0]
    assert flag_kernels(share, area, "excess", tau_excess=0.18).tolist() == [1, 1, 0, 0]
    assert flag_kernels(share, area, "rank", top=0.25).tolist() == [1, 0, 0, 0]
    assert flag_kernels(share, area, "rank", top=0.3).tolist() == [1, 1, 0, 0]  # rounded up
    assert flag_kernels(share, area, "rank", top=1.0).tolist() == [1, 1, 1, 0]  # excess > 0
    assert flag_kernels(share, 0.95, "rank", top=1.0).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="kernel rule"):
        flag_kernels(share, area, "median")


def test_settings_are_checked():
    net, annotated = diffuse_and_background_toy()
    with pytest.raises(ValueError, match="--kernel_rule"):
        KernelTerm(net, annotated, ("conv",), 1.0, rule="median")
    with pytest.raises(ValueError, match="--kernel_top"):
        KernelTerm(net, annotated, ("conv",), 1.0, rule="rank", top=0.0)


def test_cli_flags_reach_the_term():
    import train_model_doctor
    net, annotated = diffuse_and_background_toy()
    parse = train_model_doctor.get_args_parser().parse_args
    default = KernelTerm.from_args(parse(["--gamma", "1", "--kernel_layers=conv"]), net, None,
                                   annotated)
    assert (default.rule, default.tau) == ("share", 0.5)
    term = KernelTerm.from_args(parse(["--gamma", "1", "--kernel_layers=conv", "--kernel_rule",
                                       "rank", "--kernel_top", "0.5", "--kernel_tau_excess",
                                       "0.2"]), net, None, annotated)
    assert (term.rule, term.top, term.tau_excess, term.weight) == ("rank", 0.5, 0.2, 1.0)
    assert term.start_epoch(2) == {"kernels/conv": 1}
    assert KernelTerm.from_args(parse(["--gamma", "0"]), net, None, annotated) is None
    with pytest.raises(SystemExit):
        parse(["--kernel_rule", "median"])


def test_reinit_kernels_touches_only_the_marked_ones():
    net, _ = diffuse_and_background_toy()
    before = net.conv.weight.detach().clone()
    reinit_kernels(net, {"conv": torch.tensor([0.0, 1.0])})
    torch.testing.assert_close(net.conv.weight[0], before[0])
    assert not torch.equal(net.conv.weight[1], before[1]) and net.conv.bias[1] == 0
