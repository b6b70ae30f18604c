"""The in-memory data path (loaders/memory.py) against the per-image pipeline it replaces."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

import loaders
import train
from fakedata import make_image_folder
from loaders import memory

DRAWS = 4000


def raw(x, data_name, in_channels):
    """Normalised float images back to their uint8 pixel values."""
    mean, std = loaders.normalization_stats(loaders.get_spec(data_name), in_channels)
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def coordinate_folder(root):
    """One 32 px RGB image whose red channel encodes the row and green the column
    (10 + 7·index, so 0 only ever comes from padding)."""
    (root / "train" / "a").mkdir(parents=True)
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    img = np.stack([10 + 7 * rows, 10 + 7 * cols, np.full_like(rows, 99)], -1).astype(np.uint8)
    Image.fromarray(img).save(root / "train" / "a" / "x.png")
    return root, img


def crop_params(pixels):
    """``(top, left, flip)`` of an augmented coordinate image ``[3, 32, 32]`` (uint8),
    read from two pixels of row 16 (never padding: top, left ≤ 8)."""
    r = (int(pixels[0, 16, 16]) - 10) // 7
    c0, c1 = ((int(pixels[1, 16, j]) - 10) // 7 for j in (16, 17))
    flip = c1 < c0
    return r - 12, c0 - (11 if flip else 12), flip


def oracle(img_chw, top, left, flip):
    """Pad by 4 with zeros, crop 32 × 32 at (top, left), mirror: written per image in NumPy."""
    out = np.pad(img_chw, ((0, 0), (4, 4), (4, 4)))[:, top:top + 32, left:left + 32]
    return out[:, :, ::-1] if flip else out


def check_uniform_and_flips(params, hflip):
    tops, lefts, flips = (np.array(p) for p in zip(*params))
    counts = np.zeros((9, 9))
    np.add.at(counts, (tops, lefts), 1)
    expected = len(params) / 81
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 140, chi2            # 80 degrees of freedom: mean 80, sd 12.6
    assert tops.min() == lefts.min() == 0 and tops.max() == lefts.max() == 8
    if hflip:
        assert abs(flips.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(params)), flips.mean()
    else:
        assert not flips.any()


def crops_of(pixels, img_chw):
    """``(top, left, flip)`` of every augmented coordinate image in ``pixels`` ``[N, 3, 32, 32]``,
    after checking each image pixel for pixel against :func:`oracle`."""
    params = [crop_params(p) for p in pixels]
    wrong = [i for i, (p, q) in enumerate(zip(pixels, params))
             if not np.array_equal(p, oracle(img_chw, *q))]
    assert not wrong, f"{len(wrong)} images differ from pad + crop + flip, e.g. {params[wrong[0]]}"
    return params


@pytest.mark.parametrize("data_name", ["cifar10", "svhn"])   # flipped / never flipped
def test_crop_and_flip_statistics_match_per_image_pipeline(tmp_path, data_name):
    root, img = coordinate_folder(tmp_path / "d")
    img_chw = img.transpose(2, 0, 1)
    spec = loaders.get_spec(data_name)
    folder = loaders.build_dataset(data_name, root, "train")     # today's per-image pipeline
    torch.manual_seed(0)
    per_image = raw(torch.stack([folder[0][0] for _ in range(DRAWS)]), data_name, 3).numpy()
    ds = loaders.build_dataset(data_name, root, "train", data_mode="memory")
    batch = ds.batch(torch.zeros(DRAWS, dtype=torch.int64),
                     generator=torch.Generator().manual_seed(1))
    in_memory = raw(batch[0], data_name, 3).numpy()              # one batch of DRAWS copies
    for pixels in (per_image, in_memory):
        check_uniform_and_flips(crops_of(pixels, img_chw), spec.hflip)


def test_digits_never_flipped_and_eval_not_augmented(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=3)
    ds = loaders.build_dataset("digits", root, "train", data_mode="memory")
    top, left, flip = memory.draw_augmentation(10000, ds.hflip, torch.Generator().manual_seed(0))
    assert not ds.hflip and not flip.any()
    assert set(top.tolist()) == set(left.tolist()) == set(range(9))
    test = loaders.build_dataset("digits", root, "test", data_mode="memory")
    assert torch.equal(raw(test.batch(torch.arange(len(test)))[0], "digits", 1), test.images)


def test_crop_flip_by_hand():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)       # 1..9, no zero
    out = memory.crop_flip(x.expand(3, 1, 3, 3), torch.tensor([0, 1, 2]),
                           torch.tensor([0, 1, 2]), torch.tensor([False, False, True]), padding=1)
    assert out[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]        # shifted down-right
    assert out[1, 0].tolist() == x[0, 0].tolist()                          # centred: identity
    assert out[2, 0].tolist() == [[0, 6, 5], [0, 9, 8], [0, 0, 0]]        # up-left, mirrored


def test_image_mask_alignment_exact(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=20, channels=3, masks=True)
    rng = np.random.default_rng(0)
    for path in sorted((root / "train").rglob("*.png")):      # an asymmetric, image-made mask
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(path)
        mask_path = root / "masks" / "train" / path.relative_to(root / "train")
        Image.fromarray(np.where(img[..., 0] > 127, 255, 0).astype(np.uint8)).save(mask_path)
    (root / "masks" / "train" / "c1" / "img0.png").unlink()      # one image not annotated
    ds = loaders.build_dataset("cifar10", root, "train", mask_dir=root / "masks" / "train",
                               data_mode="memory")
    loader = loaders.make_loader(ds, 16, shuffle=True, seed=3)
    moved = 0
    for _ in range(5):
        for images, labels, paths, masks, annotated in loader:
            pixels = raw(images, "cifar10", 3)
            expected = (pixels[:, :1] > 127).float() * annotated.view(-1, 1, 1, 1)
            torch.testing.assert_close(masks, expected, rtol=0, atol=0)
            assert annotated.tolist() == [p != "c1/img0.png" for p in paths]
            stored = ds.images[[ds.paths.index(p) for p in paths]]
            moved += int((pixels[:, :, 4:28, 4:28] != stored[:, :, 4:28, 4:28]).any())
    assert moved > 0                 # the batches really were cropped / flipped
    image, label, path, mask, marked = ds[0]                   # the per-sample view
    torch.testing.assert_close(mask, (raw(image, "cifar10", 3)[:1] > 127).float() * marked)


def epoch_batches(loader, seed, epoch):
    loader.generator.manual_seed(seed * 100003 + epoch)      # as train.fit does
    return [(b[0].clone(), b[2]) for b in loader]


def test_determinism_per_seed_and_epoch(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=3, per_class=10, channels=3)
    ds = loaders.build_dataset("cifar10", root, "train", data_mode="memory")
    a = loaders.make_loader(ds, 8, shuffle=True, seed=5)
    b = loaders.make_loader(ds, 8, shuffle=True, seed=5)
    run_a = [epoch_batches(a, 5, e) for e in (1, 2, 3)]
    resumed = epoch_batches(b, 5, 3)                         # a fresh loader at epoch 3
    for (xa, pa), (xb, pb) in zip(run_a[2], resumed):
        assert pa == pb and torch.equal(xa, xb)
    assert [p for _, p in run_a[0]] != [p for _, p in run_a[1]]
    first = torch.cat([x for x, _ in run_a[0]])
    again = torch.cat([x for x, _ in epoch_batches(a, 5, 1)])
    other = torch.cat([x for x, _ in epoch_batches(a, 6, 1)])
    assert torch.equal(first, again) and not torch.equal(first, other)
    fixed = loaders.make_loader(ds, 8, shuffle=False, seed=5)   # same order: only the crops vary
    one, two = (torch.cat([x for x, _ in epoch_batches(fixed, 5, e)]) for e in (1, 2))
    assert not torch.equal(one, two)
    assert torch.equal(one, torch.cat([x for x, _ in epoch_batches(fixed, 5, 1)]))


def test_distributed_sampler_gives_the_order(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=3, per_class=7)
    ds = loaders.build_dataset("digits", root, "train", data_mode="memory")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, 2, rank, shuffle=True, seed=4)
        sampler.set_epoch(3)
        loader = loaders.make_loader(ds, 4, shuffle=False, sampler=sampler)
        paths = [p for batch in loader for p in batch[2]]
        assert paths == [ds.paths[i] for i in sampler] and len(loader) == 3
        seen += paths
    assert set(seen) == set(ds.paths)

    class Everything(list):          # the same indices on two ranks: their crops differ
        def __init__(self, rank):
            super().__init__(range(len(ds)))
            self.rank = rank
    crops = [next(iter(loaders.make_loader(ds, 21, False, sampler=Everything(r))))[0]
             for r in (0, 1)]
    assert not torch.equal(*crops)


@pytest.mark.parametrize("data_name,channels,in_channels", [
    ("digits", 1, None), ("cifar10", 3, None), ("cifar10", 3, 1), ("mnist", 1, None)])
def test_eval_tensors_equal_per_image_pipeline(tmp_path, data_name, channels, in_channels):
    size = loaders.get_spec(data_name).size
    root = make_image_folder(tmp_path / "d", per_class=5, size=size, channels=channels, masks=True)
    kw = dict(in_channels=in_channels, mask_dir=root / "masks" / "test")
    folder = loaders.build_dataset(data_name, root, "test", **kw)
    ds = loaders.build_dataset(data_name, root, "test", data_mode="memory", **kw)
    images, labels, paths, masks, annotated = next(iter(loaders.make_loader(ds, 100, False)))
    assert len(labels) == len(folder)
    for i in range(len(folder)):
        image, label, path, mask, marked = folder[i]
        assert torch.equal(images[i], image), path              # bit for bit
        assert (labels[i].item(), paths[i], bool(annotated[i])) == (label, path, marked)
        assert torch.equal(masks[i], mask)


def touch_later(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_cache_built_reused_and_rebuilt(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=3, masks=True)
    first = loaders.build_dataset("digits", root, "train", data_mode="memory",
                                  mask_dir=root / "masks" / "train")
    assert (root / "train" / ".decoded_1ch.npz").is_file()
    assert list((root / "masks" / "train").glob(".decoded_masks_*.npz"))
    pixels = np.asarray(Image.open(root / "train" / "c1" / "img2.png"))
    assert np.array_equal(first.images[first.paths.index("c1/img2.png"), 0].numpy(), pixels)

    def no_decoding(*args):
        raise AssertionError("decoded again")
    monkeypatch.setattr(memory, "decode_images", no_decoding)
    monkeypatch.setattr(memory, "decode_masks", no_decoding)
    again = loaders.build_dataset("digits", root, "train", data_mode="memory",
                                  mask_dir=root / "masks" / "train")
    assert torch.equal(first.images, again.images) and torch.equal(first.masks, again.masks)

    changed = root / "train" / "c1" / "img2.png"
    Image.fromarray(np.full((32, 32), 77, np.uint8)).save(changed)
    touch_later(changed)
    with pytest.raises(AssertionError, match="decoded again"):
        loaders.build_dataset("digits", root, "train", data_mode="memory")
    monkeypatch.undo()
    rebuilt = loaders.build_dataset("digits", root, "train", data_mode="memory")
    assert (rebuilt.images[rebuilt.paths.index("c1/img2.png")] == 77).all()
    assert torch.equal(rebuilt.images[:3], first.images[:3])

    (root / "masks" / "train" / "c0" / "img1.png").unlink()          # masks change too
    masked = loaders.build_dataset("digits", root, "train", data_mode="memory",
                                   mask_dir=root / "masks" / "train")
    k = masked.paths.index("c0/img1.png")
    assert not masked.annotated[k] and masked.masks[k].sum() == 0 and masked.masks.sum() > 0

    (root / "train" / "c0" / "extra.png").write_bytes(changed.read_bytes())     # a new file
    assert len(loaders.build_dataset("digits", root, "train", data_mode="memory")) == 7


def test_data_modes_and_bad_input(tmp_path):
    assert loaders.use_memory(loaders.get_spec("cifar10"), "auto")
    assert loaders.use_memory(loaders.get_spec("mnist"), "auto")
    assert not loaders.use_memory(loaders.get_spec("stl10"), "auto")
    assert not loaders.use_memory(loaders.get_spec("cifar10"), "folder")
    with pytest.raises(ValueError, match="stl10 is resized to 224 px"):
        loaders.use_memory(loaders.get_spec("stl10"), "memory")
    with pytest.raises(ValueError, match="unknown data_mode 'ram'"):
        loaders.use_memory(loaders.get_spec("cifar10"), "ram")
    root = make_image_folder(tmp_path / "d", per_class=2, size=30)
    with pytest.raises(ValueError, match=r"img0\.png is 30x30.*32x32.*--data_mode folder"):
        loaders.build_dataset("digits", root, "train", data_mode="memory")
    assert isinstance(loaders.build_dataset("stl10", root, "train", data_mode="auto"),
                      loaders.ImageFolderDataset)


def test_folder_mode_still_trains(tmp_path):
    data = make_image_folder(tmp_path / "data", num_classes=3, per_class=4)
    args = train.get_args_parser().parse_args([
        "--model_name", "smallcnn", "--data_name", "digits", "--data_dir", str(data),
        "--model_dir", str(tmp_path / "run"), "--num_epochs", "1", "--batch_size", "4",
        "--workers", "0", "--no_progress", "--device", "cpu", "--data_mode", "folder"])
    result = train.main(args)
    assert 0 <= result["final_acc"] <= 1
    assert not (data / "train" / ".decoded_1ch.npz").exists()


def test_no_masks_found_creates_no_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2)
    ds = loaders.build_dataset("digits", root, "train", mask_dir=tmp_path / "nowhere",
                               require_masks=False, data_mode="memory")
    assert ds.num_annotated == 0 and not ds.annotated.any() and ds.masks.sum() == 0
    assert ds.masks.shape == (6, 1, 32, 32) and not (tmp_path / "nowhere").exists()


def test_thread_count_restored_after_each_batch(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=4, channels=3)
    ds = loaders.build_dataset("cifar10", root, "train", data_mode="memory")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in loaders.make_loader(ds, 4, True):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_replay_of_annotated_images_in_memory(tmp_path):
    from loaders.replay import with_replay
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=6, masks=True)
    for name in ("img0.png", "img1.png", "img2.png", "img3.png"):
        for c in ("c0", "c1"):
            (root / "masks" / "train" / c / name).unlink()
    ds = loaders.build_dataset("digits", root, "train", mask_dir=root / "masks" / "train",
                               data_mode="memory")
    loader = with_replay(loaders.make_loader(ds, 5, True, seed=2), k=2, seed=2)
    annotated = {p for p, a in zip(ds.paths, ds.annotated) if a}

    def epoch(e):
        loader.generator.manual_seed(e)                # as train.fit does
        loader.batch_sampler.set_epoch(e)
        return list(loader)
    got = epoch(1)
    assert len(got) == len(loader) == 3
    assert sorted(p for b in got for p in b[2][:-2]) == sorted(ds.paths)   # each image once
    for images, labels, paths, masks, marked in got:
        assert set(paths[-2:]) <= annotated and marked[-2:].all()
        assert images.shape[0] == labels.shape[0] == masks.shape[0] == len(paths)
    again = epoch(1)
    assert all(torch.equal(a[0], b[0]) and a[2] == b[2] for a, b in zip(got, again))


@pytest.mark.parametrize("data_mode", ["memory", "folder"])
def test_annotated_eval_tensors_are_a_view_of_the_training_set(tmp_path, data_mode):
    """The kernel term's annotated images come from the training set already built (no
    augmentation), equal to a separately built evaluation set's, annotated images only."""
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=6, masks=True)
    for name in ("img0.png", "img1.png", "img2.png"):
        (root / "masks" / "train" / "c1" / name).unlink()
    spec = loaders.get_spec("cifar10")
    train_set = loaders.build_dataset("cifar10", root, "train", mask_dir=root / "masks" / "train",
                                      data_mode=data_mode)
    images, labels, masks = loaders.annotated_eval_tensors(train_set, spec)
    plain = loaders.build_dataset("cifar10", root, "train", train_transform=False,
                                  mask_dir=root / "masks" / "train")
    items = [plain[i] for i, p in enumerate(plain.mask_paths) if p is not None]
    assert len(items) == 9 and images.shape[0] == 9
    assert torch.equal(images, torch.stack([it.image for it in items]))   # bit for bit
    assert labels.tolist() == [it.label for it in items]
    assert torch.equal(masks, torch.stack([it.mask for it in items]))
    if data_mode == "memory":
        assert train_set.train        # the training set itself still augments
