"""Bad data inputs: one ``prog: error: ...`` line naming the flag or file, a non-zero exit,
and the input tree byte for byte as it was (outputs never overwrite inputs)."""
import hashlib
import os
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import loaders
from fakedata import make_image_folder
from loaders import custom, memory
from utils.io import refuse_overlap

REPO = Path(__file__).resolve().parents[1]


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def labelme_json(path: Path, points, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"shapes": [{"label": "obj", "points": points,
                                            "shape_type": "polygon"}],
                                "imageHeight": size, "imageWidth": size, "imagePath": None,
                                "imageData": None}))
    return path


def data(tmp):
    root = make_image_folder(tmp / "d", num_classes=2, per_class=2)
    labelme_json(root / "train" / "c0" / "img0.json", [[1, 1], [6, 1], [6, 6]], size=32)
    return root


CASES = {   # name -> (script, argv with {D} = the data root, words the error line names)
    "sift into the test split": ("core/image_sift.py",
                                 ["--data_path", "{D}", "--image_path", "{D}/test"],
                                 ["--image_path", "--data_path", "lies inside"]),
    "sift onto the data": ("core/image_sift.py", ["--data_path", "{D}", "--image_path", "{D}"],
                           ["--image_path", "--data_path"]),
    "sift into a folder holding the data": ("core/image_sift.py",
                                            ["--data_path", "{D}/train", "--image_path", "{D}"],
                                            ["--image_path", "contains"]),
    "masks over their images": ("preprocessing/labelme_to_mask.py",
                                ["--json_dir", "{D}/train", "--mask_dir", "{D}/train"],
                                ["--mask_dir", "--json_dir"]),
    "json_file masks into its root": ("preprocessing/labelme_to_mask.py",
                                      ["--json_file", "{D}/train/c0/img0.json",
                                       "--mask_dir", "{D}/train"], ["--mask_dir", "--json_file"]),
    "missing json_dir": ("preprocessing/labelme_to_mask.py",
                         ["--json_dir", "{D}/nowhere", "--mask_dir", "{D}/../m"],
                         ["--json_dir", "not found"]),
    "statistics into the data": ("core/grad_calculate.py",
                                 ["--data_path", "{D}", "--grad_path", "{D}/train/grads"],
                                 ["--grad_path", "--data_path"]),
    "diagnosis onto the masks": ("core/diagnose.py",
                                 ["--data_path", "{D}", "--mask_dir", "{D}/train",
                                  "--out_dir", "{D}/train"], ["--out_dir", "--data_path"]),
    "prepare_data into its source": ("preprocessing/prepare_data.py",
                                     ["--data_name", "cifar10", "--source", "{D}",
                                      "--output", "{D}/cifar10"], ["--output", "--source"]),
    "no test split": ("test.py", ["--data_dir", "{D}/train", "--data_name", "digits"],
                      ["no test/ split", "training split itself"]),
    "corrupt png": ("core/image_sift.py", ["--data_path", "{D}", "--data_name", "digits",
                                          "--image_path", "{D}/../sift", "--device", "cpu"],
                    ["cannot decode image", "c1/img1.png"]),
    "zero-byte png": ("core/image_sift.py", ["--data_path", "{D}", "--data_name", "digits",
                                            "--image_path", "{D}/../sift", "--device", "cpu"],
                      ["cannot decode image", "c1/img1.png"]),
    "mixed sizes in folder mode": ("core/image_sift.py",
                                   ["--data_path", "{D}", "--data_name", "digits",
                                    "--image_path", "{D}/../sift", "--device", "cpu"],
                                   ["c1/img1.png is 30x30", "img0.png is 32x32"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_error_line_and_inputs_untouched(tmp_path, case):
    script, argv, words = CASES[case]
    root = data(tmp_path)
    bad = root / "train" / "c1" / "img1.png"
    if case == "corrupt png":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif case == "zero-byte png":
        bad.write_bytes(b"")
    elif case == "mixed sizes in folder mode":
        Image.new("L", (30, 30)).save(bad)
    before = tree_hashes(root)
    result = subprocess.run([sys.executable, script, *[a.format(D=root) for a in argv]],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and ": error: " in lines[0], result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert tree_hashes(root) == before


def test_refuse_overlap_cases(tmp_path):
    refuse_overlap(tmp_path / "out", {"--a": tmp_path / "in", "--b": None}, "--o")
    refuse_overlap(tmp_path / "in2", {"--a": tmp_path / "in"}, "--o")   # a sibling prefix
    for out, how in ((tmp_path / "in", "is"), (tmp_path / "in" / "x", "lies inside"),
                     (tmp_path, "contains")):
        with pytest.raises(ValueError, match=f"--o {out} {how} the input --a"):
            refuse_overlap(out, {"--a": tmp_path / "in"}, "--o")


def test_hidden_files_skipped_and_missing_split_opt_in(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=2, splits=("train",))
    (root / "train" / "c0" / "._img0.png").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    ds = loaders.build_dataset("digits", root, "train")
    assert sorted(rel for rel, _ in ds.samples) == ["c0/img0.png", "c0/img1.png",
                                                     "c1/img0.png", "c1/img1.png"]
    with pytest.raises(ValueError, match="has no test/ split .*neither train/ nor test/|"
                                         "has train/ but no test/"):
        loaders.build_dataset("digits", root, "test")
    assert len(loaders.build_dataset("digits", root / "train", "test",
                                     split_required=False)) == 4


def test_16_bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(4, 0)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")                 # PIL keeps the 16 bits
    grey = np.asarray(loaders.folder.open_image(path, 1))
    assert grey.dtype == np.uint8 and grey[0].tolist() == [0, 1, 128, 255]
    rgb = np.asarray(loaders.folder.open_image(path, 3))
    assert rgb.shape == (4, 4, 3) and rgb[0, :, 1].tolist() == [0, 1, 128, 255]


def test_cache_detects_a_file_replaced_with_same_size_and_mtime(tmp_path):
    """``cp -p`` / ``rsync -a`` of another image of the same byte size keeps size and mtime:
    the cache must still notice (uncompressed PNGs of one shape have one size)."""
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=2, splits=("train",))
    path = root / "train" / "c1" / "img0.png"
    Image.fromarray(np.full((32, 32), 10, np.uint8)).save(path, compress_level=0)
    first = loaders.build_dataset("digits", root, "train", data_mode="memory")
    old = path.stat()
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(tmp_path / "new.png",
                                                           compress_level=0)
    path.write_bytes((tmp_path / "new.png").read_bytes())
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    again = loaders.build_dataset("digits", root, "train", data_mode="memory")
    k = again.paths.index("c1/img0.png")
    assert (first.images[k] == 10).all() and (again.images[k] == 200).all()


def test_folder_dataset_stats_computed_once_and_reused(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=3, size=40, channels=3)
    spec = loaders.get_spec("folder", root, 3)
    pixels = np.stack([np.asarray(Image.open(p), np.float64) / 255
                       for p in sorted((root / "train").rglob("*.png"))])
    assert (spec.image_size, spec.num_classes, spec.in_channels) == (40, 2, 3)
    np.testing.assert_allclose(spec.mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(spec.std, pixels.std(axis=(0, 1, 2)), rtol=1e-8)
    stored = json.loads((root / "train" / custom.STATS_FILE).read_text())
    assert stored["3"]["num_images"] == 6
    stored["3"]["mean"] = [0.5, 0.5, 0.5]                   # reused, not recomputed
    (root / "train" / custom.STATS_FILE).write_text(json.dumps(stored))
    assert loaders.get_spec("folder", root, 3).mean == (0.5, 0.5, 0.5)
    train = loaders.build_dataset("folder", root, "train", 3, data_mode="folder")
    test = loaders.build_dataset("folder", root, "test", 3, data_mode="folder")
    assert train[0].image.shape == test[0].image.shape == (3, 40, 40)
    mem = loaders.build_dataset("folder", root, "train", 3, data_mode="auto")   # <= 64 px
    assert isinstance(mem, loaders.MemoryDataset) and mem.images.shape[-1] == 40
    Image.new("RGB", (32, 32)).save(root / "test" / "c0" / "small.png")
    with pytest.raises(ValueError, match=r"small\.png is 32x32.*img0\.png is 40x40"):
        loaders.build_dataset("folder", root, "test", 3, data_mode="folder")


def test_image_size_flag_checked_against_the_data(tmp_path):
    import argparse
    from core.entry import add_model_data_args, resolve
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=2, size=40, channels=3)
    p = argparse.ArgumentParser()
    add_model_data_args(p)
    p.add_argument("--data_dir")
    args = p.parse_args(["--data_name", "folder", "--data_dir", str(root), "--image_size", "40"])
    setup = resolve(args, ["c0", "c1"])
    assert (setup.spec.size, setup.in_channels, setup.num_classes) == (40, 3, 2)
    args.image_size = 64
    with pytest.raises(ValueError, match="--image_size 64 but --data_name folder has 40 px"):
        resolve(args, ["c0", "c1"])


def test_trained_size_contradiction_refused(tmp_path):
    """cifar10 (32 px) on 64 px images in folder mode: training would crop 32 px of 64."""
    root = make_image_folder(tmp_path / "d", num_classes=2, per_class=2, size=64, channels=3)
    with pytest.raises(ValueError, match=r"img0\.png is 64x64, but --data_name cifar10"):
        loaders.build_dataset("cifar10", root, "train", data_mode="folder")
    with pytest.raises(ValueError, match=r"img0\.png is 64x64.*32x32"):
        loaders.build_dataset("cifar10", root, "train", data_mode="memory")


def test_labelme_shape_outside_the_image_and_bare_json_file(tmp_path, monkeypatch):
    from preprocessing import labelme_to_mask
    outside = labelme_json(tmp_path / "j" / "cat" / "far.json", [[20, 20], [30, 20], [30, 30]])
    n_ok, failures = labelme_to_mask.convert_files([outside], tmp_path / "j", tmp_path / "m")
    assert n_ok == 0 and "lie(s) outside the 8x8 image" in failures[0][1]
    labelme_json(tmp_path / "j" / "cat" / "0.json", [[1, 1], [6, 1], [6, 6]])
    monkeypatch.chdir(tmp_path / "j" / "cat")      # "--json_file 0.json" inside its class
    args = labelme_to_mask.get_args_parser().parse_args(
        ["--json_file", "0.json", "--mask_dir", str(tmp_path / "m")])
    assert labelme_to_mask.main(args) == 0
    assert (tmp_path / "m" / "cat" / "0.png").is_file()
    assert "(default: None)" not in labelme_to_mask.get_args_parser().format_help()
