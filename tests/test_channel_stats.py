"""Diagnosis: per-sample gradients, noise, statistics, normalisation, files."""
import numpy as np
import pytest
import torch

from core.channel_stats import ChannelStatistics, channel_gradients, rectify
from toy import conv_out, make_toy


def closed_form_a(net, x, labels, noise=None, grad_mode="abs"):
    """a[b, k] = mean_j Σ_hw c(W[n_b, k]) · 1[m + σ_j > 0] for the toy net."""
    m = conv_out(net, x)                                   # [B, K, H, W]
    noise = torch.zeros(1, *m.shape) if noise is None else noise   # [J, B, K, H, W]
    active = (m[None] + noise > 0).float().sum(dim=(-2, -1))       # [J, B, K]
    w = rectify(net.fc.weight.detach()[labels], grad_mode)         # [B, K]
    return (active * w[None]).mean(dim=0)


@pytest.mark.parametrize("grad_mode", ["abs", "relu"])
def test_noiseless_gradients_match_closed_form(grad_mode):
    net = make_toy()
    x = torch.randn(5, 1, 4, 4)
    labels = torch.tensor([0, 1, 2, 3, 1])
    a = channel_gradients(net, x, labels, ["conv"], grad_mode=grad_mode)["conv"]
    torch.testing.assert_close(a, closed_form_a(net, x, labels, grad_mode=grad_mode))


def test_noise_is_added_at_hooked_layer_and_redrawn_per_draw():
    net = make_toy()
    x = 0.05 * torch.randn(3, 1, 5, 5)      # conv outputs near 0, so noise flips signs
    with torch.no_grad():
        net.conv.bias.zero_()
    labels = torch.tensor([2, 0, 1])
    draws, delta = 4, 0.3
    torch.manual_seed(123)
    a = channel_gradients(net, x, labels, ["conv"], draws, delta)["conv"]
    torch.manual_seed(123)       # replay the draws: one [J·B, K, H, W] uniform tensor
    noise = torch.empty(draws * 3, 3, 5, 5).uniform_(-delta, delta).view(draws, 3, 3, 5, 5)
    torch.testing.assert_close(a, closed_form_a(net, x, labels, noise))
    # the draws differ, and one shared draw would give another answer
    assert not torch.equal(noise[0], noise[1])
    same = noise[:1].expand(draws, -1, -1, -1, -1)
    assert not torch.allclose(a, closed_form_a(net, x, labels, same))


def test_j1_delta0_equals_noiseless():
    net = make_toy()
    x = torch.randn(4, 1, 3, 3)
    labels = torch.tensor([0, 1, 2, 3])
    plain = channel_gradients(net, x, labels, ["conv"])["conv"]
    torch.testing.assert_close(channel_gradients(net, x, labels, ["conv"], 1, 0.0)["conv"], plain)
    torch.testing.assert_close(channel_gradients(net, x, labels, ["conv"], 10, 0.0)["conv"], plain)


def test_statistics_do_not_depend_on_batch_size():
    import models
    torch.manual_seed(0)
    net = models.load_model("resnet34", 1, 10, image_size=32).eval()
    x, labels = torch.randn(8, 1, 32, 32), torch.arange(8) % 10
    layers = [n for n, _ in models.load_modules(net, [0, 3])]

    def run(batch):
        stats = ChannelStatistics.for_model(net, layers, 10)
        for i in range(0, 8, batch):
            stats.update(channel_gradients(net, x[i:i + batch], labels[i:i + batch], layers),
                         labels[i:i + batch])
        return stats
    one, full = run(1), run(8)
    for name in layers:
        torch.testing.assert_close(one.sums[name], full.sums[name], rtol=1e-4, atol=1e-6)


def test_normalisation_and_threshold_by_hand():
    stats = ChannelStatistics({"conv": 4}, num_classes=2, theta=0.2)
    stats.sums["conv"] = torch.tensor([[1.0, 3.0, 5.0, 2.0], [4.0, 4.0, 0.0, 2.0]], dtype=torch.float64)
    stats.counts = torch.tensor([3, 2])
    expect = np.array([[0.0, 2 / (4 + 1e-5), 4 / (4 + 1e-5), 1 / (4 + 1e-5)],
                       [4 / (4 + 1e-5), 4 / (4 + 1e-5), 0.0, 2 / (4 + 1e-5)]])
    np.testing.assert_allclose(stats.normalized("conv").numpy(), expect, rtol=1e-12)
    np.testing.assert_array_equal(stats.mask("conv").numpy(), [[0, 1, 1, 1], [1, 1, 0, 1]])


def test_update_sums_per_class():
    stats = ChannelStatistics({"a": 2}, num_classes=3)
    stats.update({"a": torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}, torch.tensor([2, 0, 2]))
    np.testing.assert_array_equal(stats.sums["a"].numpy(), [[3, 4], [0, 0], [6, 8]])
    np.testing.assert_array_equal(stats.counts.numpy(), [1, 0, 2])
    assert stats.empty_classes() == [1]
    assert stats.mask("a")[1].tolist() == [1.0, 1.0]   # an empty class constrains nothing


def test_npz_round_trip_and_foreign_model(tmp_path):
    net = make_toy(channels=3)
    stats = ChannelStatistics.for_model(net, [0], 4, theta=0.3,
                                        settings={"model_name": "toy", "noise_draws": 10})
    stats.update({"conv": torch.rand(6, 3)}, torch.tensor([0, 1, 2, 3, 0, 1]))
    path = tmp_path / "stats.npz"
    stats.save(path)
    with np.load(path, allow_pickle=False) as z:    # self-describing without pickle
        assert list(z["layers"]) == ["conv"] and z["layer0/mask"].shape == (4, 3)
    back = ChannelStatistics.load(path)
    assert back.settings["model_name"] == "toy" and back.settings["noise_draws"] == 10
    assert back.theta == 0.3
    torch.testing.assert_close(back.sums["conv"], stats.sums["conv"])
    torch.testing.assert_close(back.mask("conv"), stats.mask("conv"))
    back.check_model(net, ["conv"], 4)
    with pytest.raises(ValueError, match=r"'conv'.*3 channels.*5"):
        back.check_model(make_toy(channels=5), ["conv"], 4)
    with pytest.raises(ValueError, match="4 classes"):
        back.check_model(net, ["conv"], 7)
    with pytest.raises(ValueError, match="no statistics for layer 'other'"):
        back.check_model(net, ["other"], 4)


def test_weights_fingerprint_tells_weights_apart():
    from utils import weights_fingerprint
    net, same = make_toy(seed=0), make_toy(seed=0)
    assert weights_fingerprint(net) == weights_fingerprint(same.train())
    with torch.no_grad():
        same.conv.weight[0, 0, 0, 0] += 1e-6
    assert weights_fingerprint(net) != weights_fingerprint(same)
    assert weights_fingerprint(net) != weights_fingerprint(make_toy(seed=1))


def test_statistics_of_another_model_or_run_are_refused(tmp_path):
    """ResNet-34's statistics fit SENet-34's layer names and widths; the stored settings and
    the weights fingerprint still tell them (and another run of ResNet-34) apart."""
    import models
    from utils import weights_fingerprint
    torch.manual_seed(0)
    resnet = models.load_model("resnet34", 3, 10, image_size=32)
    settings = {"model_name": "resnet34", "data_name": "cifar10", "grad_mode": "abs",
                "in_channels": 3, "model_fingerprint": weights_fingerprint(resnet),
                "model_path": "runs/a/model_ori.pth"}
    stats = ChannelStatistics.for_model(resnet, [0], 10, settings=settings)
    stats.save(tmp_path / "channel_stats.npz")
    back = ChannelStatistics.load(tmp_path / "channel_stats.npz")
    run = {"model_name": "resnet34", "data_name": "cifar10", "grad_mode": "abs", "in_channels": 3}
    back.check_settings(run, weights_fingerprint(resnet))            # the same run: accepted
    for key, value in (("model_name", "senet34"), ("data_name", "cifar100"),
                       ("grad_mode", "relu"), ("in_channels", 1)):
        with pytest.raises(ValueError, match=rf"channel_stats.npz was computed with "
                                             rf"{key}='?{stats.settings[key]}'?, this run has "
                                             rf"{key}='?{value}'?.*--allow_foreign_stats"):
            back.check_settings({**run, key: value}, escape="--allow_foreign_stats")
    torch.manual_seed(1)
    other_run = models.load_model("resnet34", 3, 10, image_size=32)
    with pytest.raises(ValueError, match=r"channel_stats.npz was computed on other weights "
                                         r"\(runs/a/model_ori.pth"):
        back.check_settings(run, weights_fingerprint(other_run))
    # a file from before fingerprints: a warning, not an error
    del stats.settings["model_fingerprint"]
    stats.save(tmp_path / "old.npz")
    with pytest.warns(UserWarning, match="no weights fingerprint"):
        ChannelStatistics.load(tmp_path / "old.npz").check_settings(run, "0" * 64)


def test_corrupt_statistics_files_name_the_file(tmp_path):
    net = make_toy(channels=3)
    stats = ChannelStatistics.for_model(net, [0], 4, settings={"model_name": "toy"})
    good = tmp_path / "good.npz"
    stats.save(good)
    data = good.read_bytes()
    bad = {"garbage.npz": b"not statistics\n" * 30, "empty.npz": b"",
           "cut_last_byte.npz": data[:-1]}
    bad.update({f"cut{k}.npz": data[:len(data) * k // 10] for k in (1, 5, 9)})
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"model": net.state_dict()}, tmp_path / "checkpoint_as.npz")
    np.save(tmp_path / "one_array.npy", np.arange(3))
    np.savez(tmp_path / "other_arrays.npz", a=np.arange(3))
    np.savez(tmp_path / "objects.npz", layers=np.array([{"a": 1}], dtype=object),
             channels=np.array([3]))
    np.savez(tmp_path / "bad_shape.npz", layers=np.array(["conv"]), channels=np.array([3]),
             num_classes=np.int64(4), theta=np.float64(0.2), counts=np.zeros(4, np.int64),
             **{"layer0/sum": np.zeros((4, 5))})
    names = [*bad, "checkpoint_as.npz", "one_array.npy", "other_arrays.npz", "objects.npz",
             "bad_shape.npz"]
    for name in names:
        with pytest.raises(ValueError,
                           match=rf"{name} is not a valid channel statistics file") as e:
            ChannelStatistics.load(tmp_path / name)
        assert "allow_pickle" not in str(e.value) and "pickle.load" not in str(e.value)
        assert e.value.__cause__ is None       # no chained reader message with its advice
        assert e.value.__context__ is None or e.value.__suppress_context__
    assert ChannelStatistics.load(good).layers == {"conv": 3}


def test_chunked_noise_draws_equal_one_pass_and_bound_the_batch():
    """J·B noisy copies in chunks of at most ``max_copies`` (float64, same seed) give the
    statistics of one pass over all of them; no pass sees more than the chunk."""
    net = make_toy(channels=4).double()
    x = 0.05 * torch.randn(3, 1, 5, 5, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1])
    seen = []
    hook = net.fc.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        torch.manual_seed(7)
        whole = channel_gradients(net, x, labels, ["conv"], 10, 0.3, max_copies=10**6)["conv"]
        assert seen == [30]
        seen.clear()
        torch.manual_seed(7)
        chunked = channel_gradients(net, x, labels, ["conv"], 10, 0.3, max_copies=7)["conv"]
    finally:
        hook.remove()
    assert seen == [6, 6, 6, 6, 6] and max(seen) <= 7     # 2 draws of 3 images per pass
    assert chunked.dtype == torch.float64
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    torch.manual_seed(8)         # and another seed gives other statistics
    other = channel_gradients(net, x, labels, ["conv"], 10, 0.3, max_copies=7)["conv"]
    assert not torch.allclose(other, whole)
