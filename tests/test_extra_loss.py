"""The extra-loss interface of core.engine.fit: DoctorLoss implements it (also with Ross et al.'s
term alone); its settings are keywords, and it removes its hooks as a context manager."""
import pytest
import torch

from core import engine
from core.channel_stats import ChannelStatistics
from core.extra_loss import ExtraLoss
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm
from core.right_reasons import RightReasonsTerm
from loaders import Batch, PlainBatch
from toy import make_toy


def _stats():
    stats = ChannelStatistics({"conv": 3}, 4)
    stats.sums["conv"] = torch.rand(4, 3, dtype=torch.float64)
    stats.counts[:] = 1
    return stats


def _hooked(net):
    return any(m._forward_hooks for m in net.modules())


def _channel(net):
    return ChannelTerm(net, _stats(), [0], 1.0)


def test_doctor_loss_takes_keywords_only():
    net = make_toy(channels=3, num_classes=4)
    with pytest.raises(TypeError):
        DoctorLoss([_channel(net)], net)
    assert isinstance(DoctorLoss([_channel(net)], model=net), ExtraLoss)


def test_context_manager_removes_hooks_also_on_error():
    net = make_toy(channels=3, num_classes=4)
    with DoctorLoss([_channel(net), SpatialTerm(net, [0], 1.0)], model=net) as loss:
        assert _hooked(net) and loss.hooks is not None
    assert not _hooked(net)
    with pytest.raises(RuntimeError, match="boom"):
        with DoctorLoss([_channel(net)], model=net):
            raise RuntimeError("boom")
    assert not _hooked(net)
    loss.remove()                                   # safe twice


def test_masks_needed_is_one_error():
    net = make_toy(channels=3, num_classes=4)
    x, y = torch.randn(2, 1, 4, 4), torch.tensor([0, 1])
    plain = PlainBatch(x, y, ["a", "b"])
    with DoctorLoss([SpatialTerm(net, [0], 1.0)], model=net) as loss:
        with pytest.raises(ValueError, match="beta > 0 needs masks: give --mask_dir"):
            loss(plain, x, y, net(x))
    rrr = DoctorLoss([RightReasonsTerm(1.0)], model=net)
    with pytest.raises(ValueError, match="right-reasons baseline needs masks"):
        rrr(plain, x, y, rrr.forward(net, x))


def test_interface_defaults_and_required_call():
    with pytest.raises(TypeError):
        ExtraLoss()                                 # __call__ must be written

    class Count(ExtraLoss):
        def __call__(self, batch, images, labels, logits):
            return logits.float().pow(2).mean(), {"count": float(len(batch.path))}
    loss = Count()
    net = make_toy(channels=3, num_classes=4)
    x = torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(loss.forward(net, x), net(x))
    assert loss.start_epoch(3) == {}
    loss.remove()


def test_train_one_epoch_uses_forward_and_call():
    calls = []

    class Spy(ExtraLoss):
        def forward(self, model, images):
            calls.append("forward")
            return model(images)

        def __call__(self, batch, images, labels, logits):
            calls.append(batch.path)
            return logits.new_zeros(()), {"spy": 1.0}
    net = make_toy(channels=3, num_classes=4).train()
    batch = Batch(torch.randn(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"],
                  torch.zeros(2, 1, 4, 4), torch.tensor([True, False]))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    out = engine.train_one_epoch(net, [batch], optimizer, torch.device("cpu"), 1, 4, Spy(),
                                 progress=False)
    assert calls == ["forward", ["a", "b"]] and out["train/spy"] == 1.0


@pytest.mark.parametrize("flag", ["--beta", "--gamma", "--rrr_lambda"])
def test_cli_refuses_mask_losses_without_mask_dir(tmp_path, flag):
    import train_model_doctor
    from fakedata import make_image_folder
    data = make_image_folder(tmp_path / "data", num_classes=2, per_class=2)
    weights = {"--beta": "0", "--gamma": "0", "--rrr_lambda": "0", flag: "1"}
    args = train_model_doctor.get_args_parser().parse_args([
        "--model_name", "smallcnn", "--data_name", "digits", "--data_dir", str(data),
        "--model_dir", str(tmp_path / "out"), "--init", "scratch", "--alpha", "0",
        *[t for kv in weights.items() for t in kv], "--device", "cpu"])
    with pytest.raises(ValueError, match=f"^{flag} > 0 needs masks: give --mask_dir$"):
        train_model_doctor.main(args)
