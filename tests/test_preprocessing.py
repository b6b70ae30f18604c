"""Converters on tiny files written in each dataset's real on-disk format."""
from __future__ import annotations

import csv
import gzip
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from preprocessing import decoy, digits, mini_imagenet, mnist, prepare_data
from preprocessing.cifar import convert_cifar
from preprocessing.common import CountMismatchError, folder_name, read_classes, write_dataset
from preprocessing.stl10 import convert_stl10
from preprocessing.svhn import convert_svhn

REPO = Path(__file__).resolve().parents[1]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img)


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- CIFAR

def write_cifar10(src: Path, rng, per_batch=2, n_test=3) -> dict:
    folder = src / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_cifar10_round_trip_and_rerun_is_noop(tmp_path, capsys):
    rng = np.random.default_rng(0)
    batches = write_cifar10(tmp_path / "src", rng)
    out = tmp_path / "cifar10"
    counts = {"train": 10, "test": 3}
    summary = convert_cifar("cifar10", tmp_path / "src", out, expected_counts=counts)
    assert (summary.written, summary.skipped) == (13, 0)
    assert read_classes(out) == CIFAR10_NAMES

    # Train indices run on across the five batches: batch 3, row 1 is train_00005.
    batch = batches["data_batch_3"]
    label = batch[b"labels"][1]
    png = out / "train" / CIFAR10_NAMES[label] / "train_00005.png"
    expected = batch[b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0)
    with Image.open(png) as img:
        assert img.mode == "RGB"
    np.testing.assert_array_equal(read_png(png), expected)
    test = batches["test_batch"]
    png = out / "test" / CIFAR10_NAMES[test[b"labels"][2]] / "test_00002.png"
    np.testing.assert_array_equal(read_png(png),
                                  test[b"data"][2].reshape(3, 32, 32).transpose(1, 2, 0))

    before = mtimes(out)
    capsys.readouterr()
    summary = convert_cifar("cifar10", tmp_path / "src", out, expected_counts=counts)
    assert (summary.written, summary.skipped) == (0, 13)
    assert "0 written, 13 skipped" in capsys.readouterr().out
    assert mtimes(out) == before


def test_count_mismatch_raises(tmp_path):
    write_cifar10(tmp_path / "src", np.random.default_rng(0))
    with pytest.raises(CountMismatchError, match=r"cifar10.*'train'.*10 files, expected 50000"):
        convert_cifar("cifar10", tmp_path / "src", tmp_path / "out")  # official counts
    with pytest.raises(CountMismatchError, match=r"'test'.*3 files, expected 4"):
        convert_cifar("cifar10", tmp_path / "src", tmp_path / "out",
                      expected_counts={"train": 10, "test": 4})
    convert_cifar("cifar10", tmp_path / "src", tmp_path / "out", verify=False)


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "src" / "cifar-100-python"
    folder.mkdir(parents=True)
    names = ["apple", "aquarium_fish", "baby", "bear", "beaver"]
    data = {}
    for split, n in (("train", 4), ("test", 2)):
        data[split] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                       b"fine_labels": [int(v) for v in rng.integers(0, 5, n)],
                       b"coarse_labels": [0] * n}
        (folder / split).write_bytes(pickle.dumps(data[split], protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in names],
                                                b"coarse_label_names": [b"x"]}))
    out = tmp_path / "out"
    convert_cifar("cifar100", tmp_path / "src", out, expected_counts={"train": 4, "test": 2})
    assert read_classes(out) == names
    for i in range(4):
        png = out / "train" / names[data["train"][b"fine_labels"][i]] / f"train_{i:05d}.png"
        np.testing.assert_array_equal(
            read_png(png), data["train"][b"data"][i].reshape(3, 32, 32).transpose(1, 2, 0))


# ---------------------------------------------------------------- MNIST / Fashion-MNIST

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(src: Path, rng, n_train=6, n_test=4, gz_train=True, gz_test=False, size=28):
    src.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n, gz in (("train", "train", n_train, gz_train),
                                 ("test", "t10k", n_test, gz_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051),
                                   (f"{prefix}-labels-idx1-ubyte", labels, 2049)):
            raw = idx_bytes(array, magic)
            if gz:
                (src / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (src / stem).write_bytes(raw)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("gz_train,gz_test", [(True, False), (False, True)])
def test_mnist_round_trip_gzipped_or_not(tmp_path, gz_train, gz_test):
    data = write_mnist(tmp_path / "src", np.random.default_rng(2), gz_train=gz_train,
                       gz_test=gz_test)
    out = tmp_path / "out"
    mnist.convert_mnist("mnist", tmp_path / "src", out, expected_counts={"train": 6, "test": 4})
    assert read_classes(out) == [str(d) for d in range(10)]
    for split, (images, labels) in data.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            png = out / split / str(label) / f"{split}_{i:05d}.png"
            with Image.open(png) as img:
                assert img.mode == "L"
            np.testing.assert_array_equal(read_png(png), image)


def test_fashion_mnist_class_folders(tmp_path):
    data = write_mnist(tmp_path / "src" / "FashionMNIST" / "raw", np.random.default_rng(3),
                       n_train=10)
    out = tmp_path / "out"
    mnist.convert_mnist("fashion_mnist", tmp_path / "src", out,
                        expected_counts={"train": 10, "test": 4})
    classes = read_classes(out)
    assert classes[0] == "t-shirt_top" and classes[9] == "ankle_boot" and len(classes) == 10
    assert (out / "train" / "t-shirt_top" / "train_00000.png").is_file()
    np.testing.assert_array_equal(read_png(out / "train" / "ankle_boot" / "train_00009.png"),
                                  data["train"][0][9])


def test_bad_idx_magic_names_file(tmp_path):
    write_mnist(tmp_path / "src", np.random.default_rng(4), gz_train=False)
    bad = tmp_path / "src" / "train-images-idx3-ubyte"
    bad.write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8), 2049))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic 2049, expected 2051"):
        mnist.convert_mnist("mnist", tmp_path / "src", tmp_path / "out", verify=False)


# ---------------------------------------------------------------- SVHN, STL-10

def test_svhn_label_10_is_digit_0(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "src"
    src.mkdir()
    data = {}
    for split, labels in (("train", [10, 1, 9, 10]), ("test", [3, 10])):
        x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
        scipy.io.savemat(src / f"{split}_32x32.mat",
                         {"X": x, "y": np.array(labels, np.uint8)[:, None]})
        data[split] = (x, labels)
    out = tmp_path / "out"
    convert_svhn(src, out, expected_counts={"train": 4, "test": 2})
    x, labels = data["train"]
    np.testing.assert_array_equal(read_png(out / "train" / "0" / "train_00000.png"), x[..., 0])
    np.testing.assert_array_equal(read_png(out / "train" / "9" / "train_00002.png"), x[..., 2])
    np.testing.assert_array_equal(read_png(out / "test" / "0" / "test_00001.png"),
                                  data["test"][0][..., 1])
    assert sorted(p.name for p in (out / "train" / "0").iterdir()) == \
        ["train_00000.png", "train_00003.png"]


def test_stl10_column_major_and_labels(tmp_path):
    rng = np.random.default_rng(6)
    folder = tmp_path / "src" / "stl10_binary"
    folder.mkdir(parents=True)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    data = {}
    for split, labels in (("train", [1, 10]), ("test", [5, 2, 10])):
        images = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)
        # On disk: per image, per channel, the plane column by column.
        (folder / f"{split}_X.bin").write_bytes(np.transpose(images, (0, 3, 2, 1)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(np.array(labels, np.uint8).tobytes())
        data[split] = (images, labels)
    out = tmp_path / "out"
    convert_stl10(tmp_path / "src", out, expected_counts={"train": 2, "test": 3})
    assert read_classes(out) == names
    for split, (images, labels) in data.items():
        for i, label in enumerate(labels):
            png = out / split / names[label - 1] / f"{split}_{i:05d}.png"
            np.testing.assert_array_equal(read_png(png), images[i])


# ---------------------------------------------------------------- mini-ImageNet

def write_mini_imagenet(src: Path, rng, num_classes=4, per_class=5):
    (src / "images").mkdir(parents=True)
    wnids = [f"n0{1000000 + 37 * c}" for c in range(num_classes)]
    rows = {name: [] for name in mini_imagenet.CSV_FILES}
    for c, wnid in enumerate(wnids):
        csv_name = mini_imagenet.CSV_FILES[min(c, 2)]
        for i in range(per_class):
            filename = f"{wnid}{i:08d}.jpg"
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / "images" / filename, "JPEG")
            rows[csv_name].append((filename, wnid))
    for name, content in rows.items():
        with open(src / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            writer.writerows(content)
    return wnids


def test_mini_imagenet_pooled_split_and_subset(tmp_path):
    wnids = write_mini_imagenet(tmp_path / "src", np.random.default_rng(7))
    out = tmp_path / "out"
    counts = {"train": 6, "test": 4}
    mini_imagenet.convert_mini_imagenet(tmp_path / "src", out, train_per_class=3,
                                        num_classes_subset=2, seed=1, expected_counts=counts)
    classes = read_classes(out)
    assert len(classes) == 2 and classes == sorted(classes) and set(classes) <= set(wnids)
    for wnid in classes:
        train = sorted(p.name for p in (out / "train" / wnid).iterdir())
        test = sorted(p.name for p in (out / "test" / wnid).iterdir())
        assert len(train) == 3 and len(test) == 2 and not set(train) & set(test)
        assert sorted(train + test) == [f"{wnid}{i:08d}.jpg" for i in range(5)]
        for name in train[:1] + test[:1]:
            split = "train" if name in train else "test"
            assert (out / split / wnid / name).read_bytes() == \
                (tmp_path / "src" / "images" / name).read_bytes()

    again = tmp_path / "again"
    mini_imagenet.convert_mini_imagenet(tmp_path / "src", again, train_per_class=3,
                                        num_classes_subset=2, seed=1, expected_counts=counts)
    assert sorted(p.relative_to(again) for p in again.rglob("*.jpg")) == \
        sorted(p.relative_to(out) for p in out.rglob("*.jpg"))

    with pytest.raises(CountMismatchError, match=r"mini_imagenet.*'test'.*8 files, expected 2388"):
        mini_imagenet.convert_mini_imagenet(tmp_path / "src", tmp_path / "all", 3)


# ---------------------------------------------------------------- digits and the decoy

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A slice of the real digits (15 per class and split) and its decoy version."""
    root = tmp_path_factory.mktemp("data")
    images, labels = digits.digit_images()
    keep = {split: np.concatenate([idx[labels[idx] == c][:15] for c in range(10)])
            for split, idx in digits.split_indices(labels).items()}
    write_dataset(digits.samples(images, labels, keep), root / "digits", digits.CLASSES, "digits",
                  expected_counts={"train": 150, "test": 150})
    decoy.make_decoy(root / "digits", root / "decoy_digits")
    return root / "digits", root / "decoy_digits"


def test_digits_counts_and_stratified():
    images, labels = digits.digit_images()
    assert images.shape == (1797, 32, 32) and images.dtype == np.uint8 and images.max() == 255
    splits = digits.split_indices(labels, seed=0)
    assert len(splits["train"]) == 1437 and len(splits["test"]) == 360
    assert not set(splits["train"]) & set(splits["test"])
    for c in range(10):
        n_test = (labels[splits["test"]] == c).sum()
        assert abs(n_test / (labels == c).sum() - 0.2) < 0.01


def test_prepare_data_sh_defaults():
    env = dict(os.environ, PYTHON="echo")         # print the python call instead of running it
    for key in ("data_name", "source_dir", "data_dir", "download"):
        env.pop(key, None)
    result = subprocess.run(["bash", str(REPO / "scripts" / "prepare_data.sh")], env=env,
                            capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split()[:7] == ["preprocessing/prepare_data.py", "--data_name",
                                         "decoy_digits", "--source", "data/raw/decoy_digits",
                                         "--output", "data/decoy_digits"]
    assert "--download" not in result.stdout
    env["download"] = "1"
    result = subprocess.run(["bash", str(REPO / "scripts" / "prepare_data.sh")], env=env,
                            capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split()[-1] == "--download"


def _patch_corners(image: np.ndarray, plain: np.ndarray, p: int):
    """Corner blocks that hold a uniform decoy shade, as (slice, shade)."""
    h, w = image.shape
    shades = {decoy.shade(c) for c in range(10)}
    found = []
    for top, left in [(0, 0), (0, w - p), (h - p, 0), (h - p, w - p)]:
        block = (slice(top, top + p), slice(left, left + p))
        values = np.unique(image[block])
        if len(values) == 1 and int(values[0]) in shades and (image[block] != plain[block]).any():
            found.append((block, int(values[0])))
    return found


def test_decoy_shade_encodes_label_in_train_only(built):
    plain_root, root = built
    classes = read_classes(root)
    assert classes == read_classes(plain_root)
    p = decoy.patch_size(32)
    assert p == 5
    test_hits, test_shades = [], set()
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            for path in sorted((root / split / name).iterdir())[:20]:
                image = read_png(path)
                plain = read_png(plain_root / split / name / path.name)
                mask = read_png(root / "masks" / split / name / path.name)
                corners = _patch_corners(image, plain, p)
                assert corners, path
                assert (image != plain).sum() <= p * p
                for block, value in corners:
                    assert not mask[block].any()          # the mask excludes the decoy
                if split == "train":
                    assert decoy.shade(label) in [v for _, v in corners]
                elif len(corners) == 1:
                    test_hits.append(corners[0][1] == decoy.shade(label))
                    test_shades.add(corners[0][1])
                assert mask.any() and set(np.unique(mask)) <= {0, 255}
                assert (plain[mask > 0] > 0).all()          # the mask lies on the digit
    assert len(test_hits) > 100 and np.mean(test_hits) < 0.3 and len(test_shades) >= 8


def test_decoy_is_reproducible_and_rerun_skips(built, tmp_path, capsys):
    plain_root, root = built
    again = tmp_path / "again"
    decoy.make_decoy(plain_root, again, seed=0)
    for rel in ["train/4", "test/7"]:
        for path in sorted((root / rel).iterdir())[:5]:
            assert path.read_bytes() == (again / rel / path.name).read_bytes()
    before = mtimes(again)
    capsys.readouterr()
    summary = decoy.make_decoy(plain_root, again, seed=0)
    assert (summary.written, summary.skipped) == (0, 300)
    assert "0 written, 300 skipped" in capsys.readouterr().out
    assert mtimes(again) == before


def test_add_decoy_on_a_hand_built_image():
    image = np.zeros((28, 28), np.uint8)
    image[8:20, 10:18] = 200
    image[0:3, 0:3] = 255        # object pixels in a corner the decoy may cover
    corners = set()
    for seed in range(8):
        out, mask = decoy.add_decoy(image, 3, "train", 10, np.random.default_rng(seed))
        changed = np.argwhere(out != image)      # shade 180 differs from 0, 200 and 255
        corner = tuple(changed.min(axis=0))
        assert len(changed) == 16 and corner in {(0, 0), (0, 24), (24, 0), (24, 24)}
        assert (out[out != image] == 255 - 25 * 3).all()
        assert (mask[8:20, 10:18] == 255).all() and not mask[out != image].any()
        corners.add(corner)
    assert len(corners) > 1


# ---------------------------------------------------------------- CLI and helpers

def test_cli_decoy_mnist(tmp_path):
    write_mnist(tmp_path / "raw", np.random.default_rng(8), n_train=12, n_test=6)
    args = prepare_data.get_args_parser().parse_args(
        ["--data_name", "decoy_mnist", "--source", str(tmp_path / "raw"),
         "--output", str(tmp_path / "decoy_mnist"), "--no_verify"])
    summary = prepare_data.main(args)
    assert summary.split_total("train") == 12 and summary.split_total("test") == 6
    assert len(list((tmp_path / "mnist" / "train").rglob("*.png"))) == 12
    assert len(list((tmp_path / "decoy_mnist" / "masks" / "test").rglob("*.png"))) == 6


def test_cli_refuses_subset_outside_mini_imagenet(tmp_path):
    args = prepare_data.get_args_parser().parse_args(
        ["--data_name", "svhn", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
         "--num_classes_subset", "3"])
    with pytest.raises(SystemExit, match="mini_imagenet"):
        prepare_data.main(args)


def test_folder_names_and_mixing_guard(tmp_path):
    assert folder_name("T-shirt/top") == "t-shirt_top"
    assert folder_name("Ankle boot") == "ankle_boot"
    assert folder_name("n01532829") == "n01532829"
    image = np.zeros((4, 4), np.uint8)
    write_dataset([(image, 0, "train", "a.png")], tmp_path, ["x", "y"], "toy")
    with pytest.raises(ValueError, match="other classes"):
        write_dataset([(image, 0, "train", "a.png")], tmp_path, ["x", "z"], "toy")
    with pytest.raises(ValueError, match="outside"):
        write_dataset([(image, 0, "train", "../../../a.png")], tmp_path / "r", ["x"], "toy")


# ---------------------------------------------------------------- texture decoy, val split

def test_textures_are_distinct_and_flip_invariant():
    tex = [decoy.texture(c, 28, 28) for c in range(decoy.NUM_TEXTURES)]
    for a in range(len(tex)):
        for b in range(a + 1, len(tex)):
            assert (tex[a] != tex[b]).any(), (a, b)
    for c, t in enumerate(tex):
        flipped = t[:, ::-1]
        # a horizontal flip is the same texture up to a horizontal shift of at most 3 px
        assert any((np.roll(t, s, axis=1)[:, 4:-4] == flipped[:, 4:-4]).all()
                   for s in range(4)), c


def test_texture_decoy_paints_background_only():
    image = np.zeros((28, 28), np.uint8)
    image[8:20, 10:18] = 200
    image[5, 5] = 30              # faint background pixel, below a quarter of the maximum
    out, mask = decoy.add_decoy(image, 3, "train", 10, np.random.default_rng(0), "texture", 60)
    expected_bg = np.maximum(image, decoy.texture(3, 28, 28) * 60)
    obj = mask > 0
    assert (out[obj] == image[obj]).all() and obj.sum() == 12 * 8
    assert (out[~obj] == expected_bg[~obj]).all()
    assert out[0, 0] == 0 and out[0, 1] == 60          # texture 3: vertical lines at odd x
    # test split: a random class's texture, the same mask
    seen = set()
    for seed in range(30):
        out, mask2 = decoy.add_decoy(image, 3, "test", 10, np.random.default_rng(seed),
                                     "texture", 60)
        assert (mask2 == mask).all()
        seen.add(next(c for c in range(10)
                      if (out[~obj] == np.maximum(image, decoy.texture(c, 28, 28) * 60)[~obj]).all()))
    assert len(seen) >= 6


def test_texture_decoy_val_split_and_subset(tmp_path):
    write_mnist(tmp_path / "raw", np.random.default_rng(9), n_train=40, n_test=10)
    mnist.convert_mnist("mnist", tmp_path / "raw", tmp_path / "mnist",
                        expected_counts={"train": 40, "test": 10})
    out = tmp_path / "decoy"
    decoy.make_decoy(tmp_path / "mnist", out, kind="texture", val_per_class=1,
                     train_per_class=2)
    train = sorted(p.relative_to(out / "train") for p in (out / "train").rglob("*.png"))
    val = sorted(p.relative_to(out / "val") for p in (out / "val").rglob("*.png"))
    assert len(train) == 20 and len(val) == 10 and not set(train) & set(val)
    assert len(list((out / "masks" / "val").rglob("*.png"))) == 10
    source = tmp_path / "mnist" / "train"
    for rel in train:   # training images carry their own class's texture in the background
        image, plain = read_png(out / "train" / rel), read_png(source / rel)
        bg = read_png(out / "masks" / "train" / rel) == 0
        label = int(rel.parts[0])
        painted = np.maximum(plain, decoy.texture(label, 28, 28) * decoy.TEXTURE_STRENGTH)
        assert (image[bg] == painted[bg]).all()
    with pytest.raises(ValueError, match="cannot hold out 4"):
        decoy.make_decoy(tmp_path / "mnist", tmp_path / "bad", kind="texture", val_per_class=4)


def test_fashion_mnist_found_in_system_copy(tmp_path, monkeypatch, capsys):
    system = tmp_path / "usr_share"
    write_mnist(system, np.random.default_rng(10), n_train=10)
    monkeypatch.setitem(mnist.SYSTEM_DIRS, "fashion_mnist", system)
    out = tmp_path / "out"
    mnist.convert_mnist("fashion_mnist", tmp_path / "empty", out,
                        expected_counts={"train": 10, "test": 4})
    assert f"using the system copy in {system}" in capsys.readouterr().out
    assert len(list((out / "train").rglob("*.png"))) == 10
    # files in the source folder take precedence over the system copy
    write_mnist(tmp_path / "local", np.random.default_rng(11), n_train=6)
    mnist.convert_mnist("fashion_mnist", tmp_path / "local", tmp_path / "out2",
                        expected_counts={"train": 6, "test": 4})
    assert "system copy" not in capsys.readouterr().out
