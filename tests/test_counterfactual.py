"""Counterfactual background swaps (core/counterfactual.py): the composite pixel by pixel, the
partners, the loss against a hand computation, determinism, the flags and the variant."""
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train_model_doctor
from core.config import DoctorConfig
from core.counterfactual import (CounterfactualTerm, draw_partners, mean_background,
                                 swap_backgrounds)
from core.grad_constraint import DoctorLoss, StepContext
from core.terms import build_terms
from fakedata import make_image_folder
from loaders import MASK_IGNORE, Batch, PlainBatch
from scripts import shortcut_benchmark, variants
from utils.cli import run_main

# two annotated images, 2 channels, 2 x 3 px; channel 1 is minus channel 0
X_I = torch.tensor([[1., 2., 3.], [4., 5., 6.]])
X_J = torch.tensor([[10., 20., 30.], [40., 50., 60.]])
M_I = torch.tensor([[1., 1., 0.], [0., 0., 0.]])       # i's object: (0, 0), (0, 1)
M_J = torch.tensor([[0., 1., 1.], [0., 0., 0.]])       # j's object: (0, 1), (0, 2)


def _pair():
    images = torch.stack([torch.stack([X_I, -X_I]), torch.stack([X_J, -X_J])])  # [2, 2, 2, 3]
    masks = torch.stack([M_I, M_J])[:, None]                                    # [2, 1, 2, 3]
    return images, masks


# i on j's background: i's object kept; j's object at (0, 2) is outside i's object, so it is
# filled with j's mean background (10 + 40 + 50 + 60) / 4 = 40; the rest is j's background
I_ON_J = torch.tensor([[1., 2., 40.], [40., 50., 60.]])
# j on i's background: j's object kept; i's object at (0, 0) filled with i's mean background
# (3 + 4 + 5 + 6) / 4 = 4.5
J_ON_I = torch.tensor([[4.5, 20., 30.], [4., 5., 6.]])


def test_composite_pixel_by_pixel():
    images, masks = _pair()
    out = swap_backgrounds(images, masks, torch.tensor([1, 0]))
    assert torch.equal(out[0], torch.stack([I_ON_J, -I_ON_J]))   # per channel: the mean too
    assert torch.equal(out[1], torch.stack([J_ON_I, -J_ON_I]))
    # its own partner gives the image back with its object kept and background unchanged
    assert torch.equal(swap_backgrounds(images, masks, torch.tensor([0, 1])), images)


def test_ignore_pixels_are_not_background_on_either_side():
    images, masks = _pair()
    masks[0, 0, 1, 0] = MASK_IGNORE      # i: (1, 0) kept from i
    masks[1, 0, 1, 2] = MASK_IGNORE      # j: (1, 2) is a hole, and out of j's mean background
    out = swap_backgrounds(images, masks, torch.tensor([1, 0]))[0, 0]
    fill = (10 + 40 + 50) / 3
    assert torch.equal(out, torch.tensor([[1., 2., fill], [4., 50., fill]]))


def test_expand_px_grows_the_kept_object_and_the_hole():
    images, masks = _pair()
    out = swap_backgrounds(images, masks, torch.tensor([1, 0]), expand_px=1)[0, 0]
    # i grown by 1 px (4-neighbours): (0, 0..2), (1, 0..1) kept; j grown: all but (1, 0)
    assert torch.equal(out, torch.tensor([[1., 2., 3.], [4., 5., 40.]]))


def test_image_without_background_is_filled_with_zero():
    images = torch.arange(4.).view(1, 1, 2, 2)
    assert torch.equal(mean_background(images, torch.zeros(1, 1, 2, 2)), torch.zeros(1, 1, 1, 1))


def test_compositing_commutes_with_the_loaders_normalisation():
    """Composites of normalised images are the normalised composites of the raw images."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(6, 3, 8, 8, generator=gen)
    masks = (torch.rand(6, 1, 8, 8, generator=gen) > 0.6).float()
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1)
    partner = torch.tensor([3, 4, 5, 0, 1, 2])
    a = swap_backgrounds((raw - mean) / std, masks, partner)
    b = (swap_backgrounds(raw, masks, partner) - mean) / std
    assert torch.allclose(a, b, atol=1e-5)


def test_partner_is_always_of_another_class_and_every_one_is_drawn():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    seen = set()
    for _ in range(300):
        partner, has = draw_partners(labels, gen)
        assert has.all() and (labels[partner] != labels).all()
        seen |= {(a, int(p)) for a, p in enumerate(partner)}
    # uniform over the other classes' images: each allowed pair comes up
    allowed = {(a, b) for a in range(7) for b in range(7) if labels[a] != labels[b]}
    assert seen == allowed


def test_a_single_class_has_no_partner():
    partner, has = draw_partners(torch.tensor([2, 2, 2]), torch.Generator().manual_seed(0))
    assert not has.any() and torch.equal(partner, torch.arange(3))
    partner, has = draw_partners(torch.tensor([2, 2, 5]), torch.Generator().manual_seed(0))
    assert has.all() and partner.tolist() == [2, 2, partner[2].item()] and partner[2] in (0, 1)


def test_any_partner_is_any_other_image_so_the_background_is_independent_of_the_class():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    seen, same = set(), 0
    for _ in range(400):
        partner, has = draw_partners(labels, gen, "any")
        assert has.all() and (partner != torch.arange(7)).all()
        seen |= {(a, int(p)) for a, p in enumerate(partner)}
        same += int((labels[partner] == labels).sum())
    assert seen == {(a, b) for a in range(7) for b in range(7) if a != b}
    # same-class partners come up at their share: per image (class size - 1) / 6
    expected = sum((int((labels == labels[a]).sum()) - 1) / 6 for a in range(7)) * 400
    assert abs(same - expected) < 0.15 * expected
    partner, has = draw_partners(torch.tensor([2, 2]), gen, "any")
    assert has.all() and partner.tolist() == [1, 0]          # one class is enough
    partner, has = draw_partners(torch.tensor([4]), gen, "any")
    assert not has.any()                                        # alone: no partner
    with pytest.raises(ValueError, match="'other' or 'any'"):
        draw_partners(labels, gen, "same")


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _batch():
    """Four images: the pair (classes 0 and 1, annotated) at positions 1 and 3, and two
    unannotated images (whose masks would swap if they were used)."""
    images, masks = _pair()
    noise = torch.randn(2, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    x = torch.stack([noise[0], images[0], noise[1], images[1]])
    m = torch.stack([M_J[None], masks[0], M_I[None], masks[1]])
    labels = torch.tensor([2, 0, 1, 1])
    return Batch(x, labels, ["a", "b", "c", "d"], m, torch.tensor([False, True, False, True]))


def test_loss_is_lambda_times_the_cross_entropy_of_the_hand_composites():
    net = Linear().train()
    batch = _batch()
    term = CounterfactualTerm(net, 0.7, seed=3)
    with DoctorLoss([term], model=net) as doctor:
        total, logs = doctor(batch, batch.image, batch.label, net(batch.image))
    hand = torch.stack([torch.stack([I_ON_J, -I_ON_J]), torch.stack([J_ON_I, -J_ON_I])])
    expected = F.cross_entropy(net(hand), torch.tensor([0, 1]))
    assert total.item() == pytest.approx(0.7 * expected.item(), rel=1e-6)
    assert logs["swap"] == pytest.approx(expected.item(), rel=1e-6) and logs["swapped"] == 2
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_bank_mode_draws_from_all_annotated_images_not_the_batch():
    """Without replay the term draws ``per_step`` of the annotated images given to it (the
    bank) and swaps them among themselves: the batch's own images and masks play no part."""
    net = Linear().train()
    images, masks = _pair()
    bank = (images, torch.tensor([0, 1]), masks)
    term = CounterfactualTerm(net, 0.7, seed=3, bank=bank, per_step=2)
    b = _batch()
    plain = PlainBatch(b.image, b.label, b.path)           # no masks in the batch: not read
    with DoctorLoss([term], model=net) as doctor:
        total, logs = doctor(plain, b.image, b.label, net(b.image))
    # the two images in the order the term's generator drew them
    gen = torch.Generator()
    gen.manual_seed(((3 * 100003 + 0) * 1009 + 0) * 7 + 3)
    pick = torch.randperm(2, generator=gen)[:2]
    hand = {0: torch.stack([I_ON_J, -I_ON_J]), 1: torch.stack([J_ON_I, -J_ON_I])}
    expected = F.cross_entropy(net(torch.stack([hand[int(i)] for i in pick])),
                               torch.tensor([int(i) for i in pick]))
    assert total.item() == pytest.approx(0.7 * expected.item(), rel=1e-6)
    assert logs["swapped"] == 2
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match="at least 2"):
        CounterfactualTerm(net, 1.0, bank=bank, per_step=1)


def test_treatment_run_with_swaps_from_the_bank_needs_no_replay(masked_data, tmp_path):
    out = tmp_path / "bank"
    train_model_doctor.main(_flags(*_argv(masked_data, out, "--swap_lambda", "1",
                                          "--swap_batch", "5",
                                          "--mask_dir", str(masked_data / "masks" / "train"))))
    lines = [json.loads(l) for l in (out / "epochs.jsonl").read_text().splitlines()]
    # 12 images in batches of 4: no replay, 5 swaps drawn from the 12 annotated per step
    assert lines[-1]["train/swapped"] == 5 and lines[-1]["train/swap"] > 0
    recorded = json.loads((out / "args.json").read_text())
    assert recorded["swap_batch"] == 5 and recorded["replay_annotated"] == 0


def test_batch_of_one_annotated_class_gives_zero_and_no_composite():
    net = Linear()
    b = _batch()
    batch = b._replace(label=torch.tensor([2, 1, 0, 1]))   # both annotated images of class 1
    ctx = StepContext(batch, batch.image, batch.label, net(batch.image), None, {}, {})
    value = CounterfactualTerm(net, 1.0)(ctx)
    assert value.item() == 0 and ctx.logs["swapped"] == 0


def test_needs_masks():
    net = Linear()
    b = _batch()
    plain = PlainBatch(b.image, b.label, b.path)
    ctx = StepContext(plain, b.image, b.label, net(b.image), None, {}, {})
    with pytest.raises(ValueError, match=r"^--swap_lambda > 0 needs masks: give --mask_dir$"):
        CounterfactualTerm(net, 1.0)(ctx)


def _partners(term, labels, steps=5):
    return [draw_partners(labels, term.generator)[0].tolist() for _ in range(steps)]


def test_partners_are_seeded_by_the_run_seed_and_epoch():
    net, labels = Linear(), torch.arange(20) % 4
    a, b, c = (CounterfactualTerm(net, 1.0, seed=s) for s in (5, 5, 6))
    assert _partners(a, labels) == _partners(b, labels)
    assert _partners(CounterfactualTerm(net, 1.0, seed=5), labels) != _partners(c, labels)
    # each epoch restarts its own stream: a resumed run draws what an uninterrupted one did
    a.start_epoch(2)
    fresh = CounterfactualTerm(net, 1.0, seed=5)
    fresh.start_epoch(2)
    assert _partners(a, labels) == _partners(fresh, labels)
    fresh.start_epoch(1)
    a.start_epoch(2)
    assert _partners(a, labels) != _partners(fresh, labels)


def _flags(*argv):
    return train_model_doctor.get_args_parser().parse_args(list(argv))


def test_flag_builds_the_term_and_is_in_the_key():
    net = Linear()
    assert build_terms(_flags("--alpha", "0", "--beta", "0"), net) == []
    terms = build_terms(_flags("--alpha", "0", "--beta", "0", "--swap_lambda", "3",
                               "--replay_annotated", "32", "--seed", "4"), net)
    assert [t.name for t in terms] == ["swap"] and terms[0].weight == 3 and terms[0].seed == 4
    base = DoctorConfig.parse([])
    assert base.swap_lambda == 0 and base.replace(swap_lambda=1.0).key() != base.key()
    assert DoctorConfig.parse(base.replace(swap_lambda=1.0).to_argv()).swap_lambda == 1.0


@pytest.fixture
def masked_data(tmp_path):
    return make_image_folder(tmp_path / "data", num_classes=3, per_class=4, masks=True)


def _argv(data, out, *extra):
    return ["--model_name", "smallcnn", "--data_name", "digits", "--data_dir", str(data),
            "--model_dir", str(out), "--init", "scratch", "--alpha", "0", "--beta", "0",
            "--num_epochs", "1", "--batch_size", "4", "--workers", "0", "--no_progress",
            "--device", "cpu", *extra]


@pytest.mark.parametrize("extra,line", [
    (["--swap_lambda", "-1"],
     "argument --swap_lambda: must be a finite number >= 0, got -1.0"),
    (["--swap_lambda", "1"], "--swap_lambda > 0 needs masks: give --mask_dir"),
    (["--swap_lambda", "1", "--mask_dir", "MASKS", "--swap_batch", "1"],
     "swaps from the annotated images need at least 2 of them per step (--swap_batch 1, "
     "12 annotated)"),
])
def test_bad_settings_are_one_line(masked_data, tmp_path, capsys, extra, line):
    extra = [str(masked_data / "masks" / "train") if e == "MASKS" else e for e in extra]
    parser = train_model_doctor.get_args_parser()
    parser.prog = "train_model_doctor.py"
    with pytest.raises(SystemExit):
        run_main(train_model_doctor.main, parser, _argv(masked_data, tmp_path / "out", *extra))
    err = capsys.readouterr().err.splitlines()
    # the last setting is checked when the terms are built, after the data were read
    assert err[-1] == f"train_model_doctor.py: error: {line}"
    assert all(e.startswith("decoding ") for e in err[:-1]) and "Traceback" not in str(err)


def test_treatment_run_with_swaps(masked_data, tmp_path):
    out = tmp_path / "out"
    train_model_doctor.main(_flags(*_argv(masked_data, out, "--swap_lambda", "1",
                                          "--replay_annotated", "3",
                                          "--mask_dir", str(masked_data / "masks" / "train"))))
    line = [json.loads(l) for l in (out / "epochs.jsonl").read_text().splitlines()][-1]
    # every batch carries 3 replayed annotated images; a step has 0 composites only when they
    # are all of one class
    assert line["train/swap"] > 0 and line["train/swapped"] > 0
    assert json.loads((out / "args.json").read_text())["swap_lambda"] == 1.0


def test_swap_variant_and_its_benchmark_flags(tmp_path):
    v = variants.get("swap")
    assert v.uses == ("swap_lambda",) and v.masks and v.searched[1] == "swap_lambdas"
    assert variants.weights("swap", swap_lambda=3)["swap_lambda"] == 3.0
    assert variants.weights("control")["swap_lambda"] == 0.0
    with pytest.raises(ValueError, match="shortcut_benchmark.sh"):
        variants.shell_assignments("swap", {})
    args = shortcut_benchmark.get_args_parser().parse_args(["--out_dir", str(tmp_path)])
    assert args.swap_lambdas == "0.3,1,3" and args.replay == 32
    assert shortcut_benchmark.SEARCHED["swap"] == ("swap lambda", "swap_lambdas")
    bench = shortcut_benchmark.Benchmark(args)
    extra = bench.variant_args("swap", tmp_path / "masks", tmp_path / "grads", 1.0)
    cfg = bench.treat_config(tmp_path / "res", tmp_path / "m.pth", 0, extra)
    assert (cfg.swap_lambda, cfg.replay_annotated, cfg.alpha, cfg.beta, cfg.gamma,
            cfg.rrr_lambda) == (1.0, 32, 0.0, 0.0, 0.0, 0.0)
    assert cfg.mask_dir == str(tmp_path / "masks")


def test_search_folder_of_the_swap_variant():
    assert shortcut_benchmark.search_dir("swap", 0.3) == "search/swap_l0.3"


@pytest.mark.e2e
def test_benchmark_runs_the_swap_variant(tmp_path):
    from test_shortcut_benchmark import write_idx
    write_idx(tmp_path / "raw", per_class=8)
    args = shortcut_benchmark.get_args_parser().parse_args([
        "--base_data", "mnist", "--source", str(tmp_path / "raw"),
        "--data_root", str(tmp_path / "data"), "--out_dir", str(tmp_path / "out"),
        "--results_dir", str(tmp_path / "results"), "--train_per_class", "6",
        "--val_per_class", "2", "--seeds", "0", "--train_epochs", "1", "--doctor_epochs", "1",
        "--budget", "2", "--num_high", "2", "--batch_size", "16", "--variants", "control,swap",
        "--swap_lambdas", "0.5,2", "--replay", "4", "--no_verify"])
    result = shortcut_benchmark.main(args)
    assert set(result["search"]["swap"]) == {"0.5", "2"} and result["chosen"]["swap"] in (0.5, 2)
    chosen = tmp_path / "out" / "seed0" / shortcut_benchmark.search_dir("swap",
                                                                       result["chosen"]["swap"])
    recorded = json.loads((chosen / "args.json").read_text())
    assert recorded["swap_lambda"] == result["chosen"]["swap"]
    assert recorded["replay_annotated"] == 4 and recorded["mask_dir"].endswith("seed0/masks")
    line = [json.loads(l) for l in (chosen / "epochs.jsonl").read_text().splitlines()][-1]
    assert line["train/swapped"] > 0
    assert "Counterfactual background swaps" in (tmp_path / "results" / "shortcut.md").read_text()
