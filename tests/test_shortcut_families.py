"""The shortcut families: local class-coded patches and photographic backgrounds, built from
tiny generated IDX files (the real on-disk format)."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics.groups import group_accuracies, worst_group_accuracy
from preprocessing import decoy, mnist, patches, photo_backgrounds, prepare_data
from preprocessing.photo_backgrounds import Placement

TRAIN, TEST = 40, 20      # images per class in the generated source


def write_idx(folder: Path, seed: int = 0):
    """IDX files whose images hold a bright block (the object: one value in 100-250, never
    255 nor a spot's shade) of class-dependent size and position, with a dark pixel inside
    (below the mask threshold)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, per_class in (("train", TRAIN), ("t10k", TEST)):
        labels = np.arange(10 * per_class) % 10
        images = np.zeros((len(labels), 28, 28), np.uint8)
        for i, c in enumerate(labels):
            top, left = rng.integers(3, 10, 2)
            value = int(rng.integers(100, 250))
            value += (255 - value) % 25 == 0       # never a spot's shade
            images[i, top:top + 8 + c % 5, left:left + 6 + c // 2] = value
            images[i, top + 2, left + 2] = 10          # a dark spot inside the object
        for stem, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 2051),
                                   (f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8),
                                    2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big")
                                                         for d in array.shape)
            (folder / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    write_idx(root / "raw")
    mnist.convert_mnist("fashion_mnist", root / "raw", root / "plain",
                        expected_counts={"train": 10 * TRAIN, "test": 10 * TEST})
    return root / "plain"


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def images(root: Path, split: str):
    """``(relative path, label, image)`` of a split, in a fixed order."""
    classes = (root / "classes.txt").read_text().split()
    for path in sorted((root / split).rglob("*.png")):
        rel = path.relative_to(root / split)
        yield rel, classes.index(rel.parts[0]), read_png(path)


def chi_square_uniform(values, bins: int) -> float:
    counts = np.bincount(values, minlength=bins)
    expected = len(values) / bins
    return float(((counts - expected) ** 2 / expected).sum())


# ---------------------------------------------------------------- local patches

def decode(image: np.ndarray, kind: str) -> set[int]:
    """The classes whose patch appears whole in ``image`` (the source holds no 255 pixel and
    no shade of exactly a spot's value in a 4x4 square, so only the decoy matches)."""
    side = patches.patch_side(image.shape[0])
    windows = np.lib.stride_tricks.sliding_window_view(image, (side, side))
    found = set()
    for code in range(10):
        hits = (windows == patches.pattern(kind, code, side)).all(axis=(2, 3))
        if hits.any():
            found.add(code)
    return found


@pytest.mark.parametrize("kind", patches.KINDS)
def test_patch_decoy_is_class_coded_in_train_random_elsewhere_masks_exact(plain, tmp_path, kind):
    out = tmp_path / kind
    decoy.make_decoy(plain, out, kind=kind, val_per_class=10)
    codes = {"train": [], "other": []}
    for split in ("train", "val", "test"):
        source_split = "train" if split == "val" else split
        for rel, label, image in images(out, split):
            source = read_png(plain / source_split / rel)
            mask = read_png(out / "masks" / split / rel)
            # the mask is the object of the source, the decoy lies outside it
            np.testing.assert_array_equal(mask, np.where(source > 0.25 * source.max(), 255, 0))
            changed = image != source
            assert changed.any() and not mask[changed].any()
            assert changed.sum() <= patches.patch_side(28) ** 2
            found = decode(image, kind)
            assert len(found) == 1, (split, rel, found)
            if split == "train":
                codes["train"].append((found.pop(), label))
            else:
                codes["other"].append((found.pop(), label))
    train = np.array(codes["train"])
    assert len(train) == 300 and (train[:, 0] == train[:, 1]).all()
    other = np.array(codes["other"])                 # 100 val + 200 test images
    assert len(other) == 300
    # a random class's patch: matches the label about one time in ten (30 expected,
    # sd 5), and every code about as often (chi-square, 9 dof: 27.9 is p = 0.001)
    assert 12 <= (other[:, 0] == other[:, 1]).sum() <= 48
    assert chi_square_uniform(other[:, 0], 10) < 27.9


def test_patch_positions_vary_and_avoid_the_object():
    image = np.zeros((28, 28), np.uint8)
    image[:, 4:28] = 200                             # the object leaves a 4-px column free
    mask = decoy.object_mask(image)
    lefts, tops = set(), set()
    for seed in range(20):
        out, (top, left) = patches.paint(image, mask, "glyph", 3, np.random.default_rng(seed))
        assert left == 0 and (out[:, 4:] == 200).all()
        np.testing.assert_array_equal(out[top:top + 4, 0:4], patches.GLYPHS[3] * 255)
        tops.add(top)
    assert len(tops) > 5
    # a free image: positions spread over the whole image
    empty = np.zeros((28, 28), np.uint8)
    for seed in range(20):
        _, (top, left) = patches.paint(empty, empty, "spot", 3, np.random.default_rng(seed))
        lefts.add(left)
    assert len(lefts) > 5
    # no free window: only background pixels of the least covered window change
    full = np.full((28, 28), 200, np.uint8)
    full[0, 0] = 0
    out, _ = patches.paint(full, decoy.object_mask(full), "spot", 2, np.random.default_rng(0))
    np.testing.assert_array_equal(out[full == 200], full[full == 200])
    assert out[0, 0] == 255 - 25 * 2


def test_glyphs_are_far_apart_and_scale_with_the_image():
    bits = patches.GLYPHS.reshape(len(patches.GLYPHS), -1)
    distances = (bits[:, None] != bits[None]).sum(-1)
    assert distances[~np.eye(len(bits), dtype=bool)].min() >= 6
    assert patches.patch_side(28) == 4 and patches.patch_side(64) == 8
    big = patches.pattern("glyph", 5, 8)
    np.testing.assert_array_equal(big[::2, ::2], patches.GLYPHS[5] * 255)
    assert (big[1::2, 1::2] == big[::2, ::2]).all()


# ---------------------------------------------------------------- photographic backgrounds

@pytest.fixture(scope="module")
def photo(plain, tmp_path_factory):
    out = tmp_path_factory.mktemp("photo") / "p95"
    photo_backgrounds.make_photo(plain, out, correlation=0.95, val_per_class=10)
    return out


def rows_by_file(root: Path, split: str) -> dict[str, dict]:
    return {r["file"]: r for r in photo_backgrounds.read_groups(root / split / "groups.csv")}


def expected_mask(source: np.ndarray, box: Placement, size: int = 64) -> np.ndarray:
    """The source's object mask, each pixel (i, j) of the box copying source pixel
    (i * 28 // side, j * 28 // side)."""
    obj = np.where(source > 0.25 * source.max(), 255, 0).astype(np.uint8)
    idx = np.arange(box.side) * 28 // box.side
    mask = np.zeros((size, size), np.uint8)
    mask[box.top:box.top + box.side, box.left:box.left + box.side] = obj[np.ix_(idx, idx)]
    return mask


def test_photo_masks_are_exact_and_the_object_untouched(plain, photo):
    for split in ("train", "val", "test"):
        rows = rows_by_file(photo, split)
        files = list(images(photo, split))
        assert len(rows) == len(files) == {"train": 300, "val": 100, "test": 200}[split]
        for rel, label, image in files:
            row = rows[rel.as_posix()]
            assert row["class"] == label and row["group"] == 2 * label + row["agrees"]
            assert image.shape == (64, 64, 3)
            source = read_png(plain / ("train" if split == "val" else split) / rel)
            box = Placement(row["top"], row["left"], row["side"])
            assert 28 <= box.side <= 52 and box.top + box.side <= 64
            mask = read_png(photo / "masks" / split / rel)
            np.testing.assert_array_equal(mask, expected_mask(source, box))
            # inside the mask: the item's own grey values, the same in R, G and B
            obj = mask > 0
            assert (image[obj] == image[obj][:, :1]).all()
            assert set(np.unique(image[obj][:, 0])) <= set(np.unique(source[source > 0]))
    # the photograph is there: outside the masks, colour (R != B) somewhere
    _, _, image = next(images(photo, "test"))
    assert image.std() > 5


def test_photo_place_follows_the_correlation(photo):
    places = len(photo_backgrounds.PLACES)
    train = photo_backgrounds.read_groups(photo / "train" / "groups.csv")
    agrees = np.mean([r["agrees"] for r in train])
    assert abs(agrees - 0.95) < 0.04                  # sd 0.013 for 300 images
    held = [r for s in ("val", "test")
            for r in photo_backgrounds.read_groups(photo / s / "groups.csv")]
    assert abs(np.mean([r["agrees"] for r in held]) - 1 / places) < 0.07
    index = {name: i for i, name in enumerate(photo_backgrounds.PLACE_NAMES)}
    assert chi_square_uniform([index[r["place"]] for r in held], places) < 18.5   # 4 dof
    for r in train:
        own = photo_backgrounds.PLACE_NAMES[r["class"] % places]
        assert r["agrees"] == (r["place"] == own)


def test_photo_without_correlation_is_independent_in_train_too(plain, photo, tmp_path):
    out = tmp_path / "p0"
    photo_backgrounds.make_photo(plain, out, correlation=0, val_per_class=10)
    places = len(photo_backgrounds.PLACES)
    train = photo_backgrounds.read_groups(out / "train" / "groups.csv")
    assert abs(np.mean([r["agrees"] for r in train]) - 1 / places) < 0.07
    index = {name: i for i, name in enumerate(photo_backgrounds.PLACE_NAMES)}
    # independent of the class: the places of each class's 30 images spread over all 5
    for c in range(10):
        assert len({r["place"] for r in train if r["class"] == c}) == places
    # the decoy-free twin: the same items in the same boxes, only the background differs
    twin = rows_by_file(photo, "train")
    assert all((r["top"], r["left"], r["side"]) == (twin[r["file"]]["top"],
               twin[r["file"]]["left"], twin[r["file"]]["side"]) for r in train)
    assert chi_square_uniform([index[r["place"]] for r in train], places) < 18.5


def test_photo_is_deterministic_with_a_seed(plain, photo, tmp_path):
    # a rebuild with fewer training images: the same val and test files, byte for byte (the
    # draws are seeded per image), the kept training files too
    again = tmp_path / "again"
    photo_backgrounds.make_photo(plain, again, correlation=0.95, val_per_class=10,
                                 train_per_class=3)
    files = sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert len(files) == 2 * (30 + 100 + 200)
    assert all((photo / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert (photo / "test" / "groups.csv").read_bytes() == \
        (again / "test" / "groups.csv").read_bytes()
    other = tmp_path / "other"
    photo_backgrounds.make_photo(plain, other, seed=1, correlation=0.95, val_per_class=10,
                                 train_per_class=3)
    differ = [f for f in files if f.parts[0] == "test"
              and (photo / f).read_bytes() != (other / f).read_bytes()]
    assert len(differ) > 150


def test_photo_refuses_bad_settings(plain, tmp_path):
    with pytest.raises(ValueError, match="correlation"):
        photo_backgrounds.make_photo(plain, tmp_path / "x", correlation=0.1)
    with pytest.raises(ValueError, match="size"):
        photo_backgrounds.make_photo(plain, tmp_path / "x", size=32)


def test_photo_cli_and_loader_at_96_px(plain, tmp_path, capsys):
    import loaders
    args = prepare_data.get_args_parser().parse_args(
        ["--data_name", "photo_fashion_mnist96", "--source", str(plain.parent / "raw"),
         "--plain_output", str(plain), "--output", str(tmp_path / "photo96"),
         "--correlation", "0", "--val_per_class", "2", "--subset_per_class", "3",
         "--no_verify"])
    prepare_data.main(args)
    for split, count in (("train", 30), ("val", 20), ("test", 200)):
        assert len(list((tmp_path / "photo96" / split).rglob("*.png"))) == count
        assert len(list((tmp_path / "photo96" / "masks" / split).rglob("*.png"))) == count
    dataset = loaders.build_dataset("photo_fashion_mnist96", tmp_path / "photo96", "val",
                                    mask_dir=tmp_path / "photo96" / "masks" / "val")
    sample = dataset[0]
    assert tuple(sample.image.shape) == (3, 96, 96) and sample.annotated
    assert 0 < sample.mask.mean() < 0.5        # the item covers part of the image
    with pytest.raises(SystemExit):
        prepare_data.get_args_parser().parse_args(
            ["--data_name", "photo_fashion_mnist", "--output", "o", "--correlation", "0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: argument --correlation: correlation must be 0" in err[-1]


# ---------------------------------------------------------------- group accuracy

def test_group_accuracies_on_a_hand_built_case():
    labels = [0, 0, 0, 1, 1, 1, 1, 0]
    groups = [1, 1, 0, 3, 3, 2, 2, 1]      # 2 * class + (place agrees)
    pred = [0, 0, 1, 1, 1, 0, 1, 1]
    accuracies = group_accuracies(pred, labels, groups)
    assert accuracies == {0: 0.0, 1: 2 / 3, 2: 0.5, 3: 1.0}
    assert worst_group_accuracy(pred, labels, groups) == 0.0
    assert worst_group_accuracy([0, 1], [0, 1], [5, 5]) == 1.0
    with pytest.raises(ValueError, match="length"):
        group_accuracies([0], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="no samples"):
        worst_group_accuracy([], [], [])


# ---------------------------------------------------------------- the benchmark's data

def test_benchmark_builds_the_photo_family_and_its_independent_twin(plain, tmp_path):
    from loaders import get_spec
    from models.registry import default_stem
    from scripts import shortcut_benchmark
    argv = ["--source", str(plain.parent / "raw"), "--data_root", str(tmp_path / "data"),
            "--out_dir", str(tmp_path / "out"), "--decoy_kind", "photo", "--correlation",
            "0.9", "--train_per_class", "3", "--val_per_class", "2", "--no_verify"]
    args = shortcut_benchmark.get_args_parser().parse_args(argv)
    name = shortcut_benchmark.data_name(args)
    spec = get_spec(name)
    assert (name, spec.size, spec.in_channels) == ("photo_fashion_mnist", 64, 3)
    assert default_stem(spec.size) == "small"          # the CIFAR forms run at 64 px
    assert default_stem(get_spec("photo_fashion_mnist96").size) == "imagenet"
    bench = shortcut_benchmark.Benchmark(args)
    bench.prepare()
    assert bench.decoy_dir.name == "shortcut_fashion_mnist_photo0.9_3"
    assert bench.clean_dir.name == "shortcut_fashion_mnist_photo0_3"
    for root in (bench.decoy_dir, bench.clean_dir):
        for split, count in (("train", 30), ("val", 20), ("test", 200)):
            rows = photo_backgrounds.read_groups(root / split / "groups.csv")
            assert len(rows) == count
            assert len(list((root / "masks" / split).rglob("*.png"))) == count
    decoyed = photo_backgrounds.read_groups(bench.decoy_dir / "train" / "groups.csv")
    assert np.mean([r["agrees"] for r in decoyed]) > 0.7
    with pytest.raises(ValueError, match="fashion_mnist"):
        shortcut_benchmark.Benchmark(shortcut_benchmark.get_args_parser().parse_args(
            argv + ["--base_data", "mnist"]))


def test_benchmark_large_image_stand_in_is_one_decoy_free_dataset(plain, tmp_path):
    """``--image_size 96 --correlation 0``: the large-image stand-in (STL-10's regime): one
    96 px dataset whose backgrounds are independent of the class, no clean twin, the
    ImageNet stem; another size is refused outside the photo family."""
    from loaders import get_spec
    from models.registry import default_stem
    from scripts import shortcut_benchmark
    argv = ["--source", str(plain.parent / "raw"), "--data_root", str(tmp_path / "data"),
            "--out_dir", str(tmp_path / "out"), "--decoy_kind", "photo", "--correlation", "0",
            "--image_size", "96", "--train_per_class", "3", "--val_per_class", "2",
            "--no_verify"]
    args = shortcut_benchmark.get_args_parser().parse_args(argv)
    assert shortcut_benchmark.data_name(args) == "photo_fashion_mnist96"
    assert default_stem(get_spec("photo_fashion_mnist96").size) == "imagenet"
    bench = shortcut_benchmark.Benchmark(args)
    assert not bench.has_clean and bench.decoy_dir == bench.clean_dir
    bench.prepare()
    assert bench.decoy_dir.name == "shortcut_fashion_mnist_photo0_96px_3"
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith("shortcut")] \
        == [bench.decoy_dir.name]
    _, _, image = next(images(bench.decoy_dir, "train"))
    assert image.shape == (96, 96, 3)
    train = photo_backgrounds.read_groups(bench.decoy_dir / "train" / "groups.csv")
    assert len(train) == 30 and np.mean([r["agrees"] for r in train]) < 0.5
    bench.check_config()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["image_size"] == 96
    with pytest.raises(ValueError, match="image_size"):
        shortcut_benchmark.Benchmark(shortcut_benchmark.get_args_parser().parse_args(
            argv[:6] + ["--decoy_kind", "texture", "--image_size", "96"]))


def test_test_per_class_keeps_a_seeded_subset_of_the_test_split(plain, tmp_path):
    """``test_per_class``: that many test images per class, the same ones on a rebuild and in
    the decoy dataset and its clean twin (paired comparisons see the same images)."""
    out = {}
    for kind in ("spot", "none"):
        out[kind] = tmp_path / kind
        decoy.make_decoy(plain, out[kind], kind=kind, val_per_class=2, test_per_class=3)
    again = tmp_path / "again"
    decoy.make_decoy(plain, again, kind="none", val_per_class=2, test_per_class=3)
    names = {k: sorted(str(p.relative_to(d / "test")) for p in (d / "test").rglob("*.png"))
             for k, d in {**out, "again": again}.items()}
    assert len(names["none"]) == 30
    assert all(sum(n.startswith(c + "/") for n in names["none"]) == 3
               for c in (plain / "classes.txt").read_text().split())
    assert names["spot"] == names["none"] == names["again"]
    every = sorted(str(p.relative_to(plain / "test")) for p in (plain / "test").rglob("*.png"))
    assert set(names["none"]) < set(every)
    train = sorted(p.name for p in (out["none"] / "train").rglob("*.png"))
    assert len(train) == 10 * (TRAIN - 2)          # the training split is untouched
