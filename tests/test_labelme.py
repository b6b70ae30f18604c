"""labelme JSON -> mask conversion and the synthetic annotator.

Expected masks are built by hand with numpy slicing; labelme's rasteriser includes the pixels
on a shape's boundary, so a polygon or rectangle with integer corners (x0, y0)-(x1, y1) fills
rows y0..y1 and columns x0..x1 inclusive.
"""
from __future__ import annotations

import base64
import io
import os
import json
import subprocess
import sys
from pathlib import Path

import cv2
import labelme
import numpy as np
import pytest
from PIL import Image

from preprocessing import labelme_to_mask
from preprocessing.labelme_to_mask import convert_folder, json_to_mask
from preprocessing.synthetic_labelme import mask_to_labelme

REPO = Path(__file__).resolve().parents[1]
H, W = 12, 16


def shape(points, shape_type="polygon", label="object", **extra):
    return {"label": label, "points": points, "group_id": None, "description": "",
            "shape_type": shape_type, "flags": {}, **extra}


def write_json(path: Path, shapes, height=H, width=W, image_path="img.png", image_data=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": labelme.__version__, "flags": {}, "shapes": shapes, "imagePath": image_path,
        "imageData": image_data, "imageHeight": height, "imageWidth": width}))
    return path


def png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def block(y0, y1, x0, x1, height=H, width=W):
    """255 on rows y0..y1 and columns x0..x1 (inclusive)."""
    m = np.zeros((height, width), np.uint8)
    m[y0:y1 + 1, x0:x1 + 1] = 255
    return m


def iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum() / (a | b).sum()


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --------------------------------------------------------------------- shape types

def test_polygon_axis_aligned_is_exact_block(tmp_path):
    p = write_json(tmp_path / "a.json", [shape([[2, 3], [9, 3], [9, 7], [2, 7]])])
    mask = json_to_mask(p)
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    np.testing.assert_array_equal(mask, block(3, 7, 2, 9))


def test_rectangle_is_exact_block_in_any_corner_order(tmp_path):
    p = write_json(tmp_path / "a.json", [shape([[10, 8], [4, 1]], "rectangle")])
    np.testing.assert_array_equal(json_to_mask(p), block(1, 8, 4, 10))


def test_circle_centre_and_radius(tmp_path):
    size, (cx, cy), r = 32, (15, 16), 10
    p = write_json(tmp_path / "a.json", [shape([[cx, cy], [cx + r, cy]], "circle")],
                   height=size, width=size)
    mask = json_to_mask(p) > 0
    yy, xx = np.mgrid[:size, :size]
    dist = np.hypot(xx - cx, yy - cy)
    assert mask[cy, cx] and not mask[0, 0] and not mask[-1, -1]
    assert mask[dist <= r - 1].all()
    assert not mask[dist >= r + 1].any()
    assert abs(mask.sum() - np.pi * r ** 2) / (np.pi * r ** 2) < 0.15


def test_mask_shape_is_placed_at_its_box(tmp_path):
    bitmap = np.zeros((4, 5), np.uint8)
    bitmap[1:3, 1:4] = 1
    bitmap[0, 0] = 1
    p = write_json(tmp_path / "a.json", [shape([[6, 2], [10, 5]], "mask", mask=png_b64(bitmap))])
    expected = np.zeros((H, W), np.uint8)
    expected[2:6, 6:11] = bitmap * 255
    np.testing.assert_array_equal(json_to_mask(p), expected)


def test_ignore_label_is_dont_care_and_the_object_wins(tmp_path):
    """``__ignore__`` areas are 128 ("don't care"), object pixels stay 255 where both cover."""
    p = write_json(tmp_path / "a.json", [
        shape([[0, 0], [15, 11]], "rectangle", label="__ignore__"),
        shape([[2, 2], [4, 4]], "rectangle")])
    expected = np.full((H, W), 128, np.uint8)
    expected[2:5, 2:5] = 255
    np.testing.assert_array_equal(json_to_mask(p), expected)
    q = write_json(tmp_path / "b.json", [
        shape([[2, 2], [4, 4]], "rectangle"),
        shape([[3, 0], [9, 1]], "rectangle", label="__ignore__")])
    expected = block(2, 4, 2, 4)
    expected[0:2, 3:10] = 128
    np.testing.assert_array_equal(json_to_mask(q), expected)


def test_lines_and_points_contribute_nothing(tmp_path):
    p = write_json(tmp_path / "a.json", [
        shape([[0, 0], [15, 11]], "line"),
        shape([[0, 11], [8, 0], [15, 11]], "linestrip"),
        shape([[7, 6]], "point"),
        shape([[1, 1], [14, 10]], "points"),
        shape([[12, 9], [13, 10]], "rectangle")])
    np.testing.assert_array_equal(json_to_mask(p), block(9, 10, 12, 13))


def test_union_of_two_shapes(tmp_path):
    p = write_json(tmp_path / "a.json", [
        shape([[1, 1], [5, 4]], "rectangle", label="object"),
        shape([[4, 3], [8, 3], [8, 9], [4, 9]], label="another")])
    expected = np.maximum(block(1, 4, 1, 5), block(3, 9, 4, 8))
    np.testing.assert_array_equal(json_to_mask(p), expected)


# --------------------------------------------------------------------- image size

def test_embedded_image_data_of_the_right_size(tmp_path):
    image = np.zeros((H, W, 3), np.uint8)
    p = write_json(tmp_path / "a.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_path="missing.png", image_data=png_b64(image))
    np.testing.assert_array_equal(json_to_mask(p), block(1, 3, 1, 3))


def test_embedded_image_data_size_mismatch_names_the_file(tmp_path):
    image = np.zeros((H + 1, W, 3), np.uint8)
    p = write_json(tmp_path / "bad_size.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_data=png_b64(image))
    with pytest.raises(ValueError, match="bad_size.json.*mismatch"):
        json_to_mask(p)


def test_image_file_size_mismatch_names_the_file(tmp_path):
    Image.new("RGB", (W + 2, H)).save(tmp_path / "cat_1.png")
    p = write_json(tmp_path / "cat_1.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_path="cat_1.png")
    with pytest.raises(ValueError, match="cat_1.json.*mismatch"):
        json_to_mask(p)


def test_image_found_under_image_root(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    Image.new("RGB", (W, H + 3)).save(tmp_path / "images" / "cat" / "x.png")
    p = write_json(tmp_path / "json" / "cat" / "x.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_path="elsewhere/x.png")
    json_to_mask(p, json_root=tmp_path / "json")  # no image found: nothing to cross-check
    with pytest.raises(ValueError, match="x.json.*mismatch"):
        json_to_mask(p, image_root=tmp_path / "images", json_root=tmp_path / "json")


# --------------------------------------------------------------------- folders and CLI

def make_folder(root: Path):
    write_json(root / "cat" / "good_1.json", [shape([[1, 1], [3, 3]], "rectangle")])
    write_json(root / "dog" / "good_2.json", [shape([[2, 2], [5, 6]], "rectangle")])
    (root / "dog" / "syntax.json").write_text('{"shapes": [')
    (root / "dog" / "no_keys.json").write_text('{"shapes": []}')
    write_json(root / "cat" / "two_points.json", [shape([[1, 1], [3, 3]], "polygon")])
    write_json(root / "cat" / "only_ignored.json", [shape([[1, 1], [3, 3]], "rectangle",
                                                          label="__ignore__")])


BAD = {"syntax.json", "no_keys.json", "two_points.json", "only_ignored.json"}


def test_convert_folder_reports_bad_files_and_converts_the_rest(tmp_path):
    make_folder(tmp_path / "json")
    n_ok, failures = convert_folder(tmp_path / "json", tmp_path / "masks")
    assert n_ok == 2
    assert {p.name for p, _ in failures} == BAD
    assert all(p.name in reason for p, reason in failures)
    written = sorted(p.relative_to(tmp_path / "masks").as_posix()
                     for p in (tmp_path / "masks").rglob("*.png"))
    assert written == ["cat/good_1.png", "dog/good_2.png"]
    with Image.open(tmp_path / "masks" / "dog" / "good_2.png") as im:
        assert im.mode == "L" and im.size == (W, H)
        np.testing.assert_array_equal(np.asarray(im), block(2, 6, 2, 5))


def run_cli(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"preprocessing/{script}", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_cli_exit_status_is_nonzero_on_failures(tmp_path):
    make_folder(tmp_path / "json")
    result = run_cli("labelme_to_mask.py", "--json_dir", tmp_path / "json",
                     "--mask_dir", tmp_path / "masks")
    assert result.returncode != 0
    for name in BAD:
        assert name in result.stderr
    assert "converted 2/6" in result.stdout
    assert (tmp_path / "masks" / "cat" / "good_1.png").is_file()


def test_image_path_cannot_escape(tmp_path):
    """imagePath outside the input root is neither read nor used to name the output."""
    Image.new("RGB", (3, 3)).save(tmp_path / "x.png")  # wrong size: reading it would fail
    write_json(tmp_path / "in" / "cat" / "a.json", [shape([[1, 1], [3, 3]], "rectangle")],
               image_path="../../x.png")
    write_json(tmp_path / "in" / "cat" / "b.json", [shape([[1, 1], [3, 3]], "rectangle")],
               image_path="../../../../../../../../tmp/evil.png")
    before = snapshot(tmp_path)
    n_ok, failures = convert_folder(tmp_path / "in", tmp_path / "out")
    assert (n_ok, failures) == (2, [])
    created = snapshot(tmp_path) - before
    assert all((tmp_path / "out") in p.parents or p == tmp_path / "out" for p in created)
    assert sorted(p.name for p in created if p.is_file()) == ["a.png", "b.png"]


def test_json_file_flag_keeps_the_class_folder(tmp_path):
    p = write_json(tmp_path / "json" / "bird" / "b_7.json", [shape([[1, 1], [3, 3]], "rectangle")])
    args = labelme_to_mask.get_args_parser().parse_args(
        ["--json_file", str(p), "--mask_dir", str(tmp_path / "masks")])
    assert labelme_to_mask.main(args) == 0
    assert (tmp_path / "masks" / "bird" / "b_7.png").is_file()


# --------------------------------------------------------------------- synthetic annotator

def blob(size=32):
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (15, 17), (9, 6), 30, 0, 360, 255, -1)
    cv2.circle(m, (22, 9), 4, 255, -1)
    return m


def test_mask_to_labelme_is_a_labelme_file(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    doc = mask_to_labelme(blob(), "img.png")
    assert doc["version"] == labelme.__version__
    assert doc["imageData"] is None and (doc["imageHeight"], doc["imageWidth"]) == (32, 32)
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in doc["shapes"])
    write_json(tmp_path / "img.json", doc["shapes"], 32, 32)
    assert len(labelme.LabelFile(str(tmp_path / "img.json")).shapes) == len(doc["shapes"])


def test_synthetic_round_trip_iou(tmp_path):
    mask = blob()
    doc = mask_to_labelme(mask, "img.png")
    p = tmp_path / "img.json"
    p.write_text(json.dumps(doc))
    assert iou(json_to_mask(p), mask) >= 0.9  # 0.987 measured (epsilon 0.5)


def test_mask_to_labelme_drops_specks():
    mask = np.zeros((16, 16), np.uint8)
    mask[3, 3] = 255            # one pixel
    mask[8, 2:4] = 255          # two pixels
    mask[10:14, 10:14] = 255    # a real object
    assert len(mask_to_labelme(mask, "x.png")["shapes"]) == 1


@pytest.mark.e2e
def test_synthetic_cli_then_mask_cli(tmp_path):
    images, gt = tmp_path / "sift" / "low", tmp_path / "gt"
    for cls in ("cat", "dog"):
        for i in range(3):
            (images / cls).mkdir(parents=True, exist_ok=True)
            (gt / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32)).save(images / cls / f"{cls}_{i}.png")
            if (cls, i) != ("dog", 0):
                Image.fromarray(blob()).save(gt / cls / f"{cls}_{i}.png")
    result = run_cli("synthetic_labelme.py", "--image_dir", images, "--gt_mask_dir", gt,
                     "--json_dir", tmp_path / "json", "--per_class", 2)
    assert result.returncode == 0, result.stderr
    assert "dog_0" in result.stderr  # missing ground truth: warned, skipped
    jsons = sorted(p.relative_to(tmp_path / "json").as_posix()
                   for p in (tmp_path / "json").rglob("*.json"))
    assert jsons == ["cat/cat_0.json", "cat/cat_1.json", "dog/dog_1.json"]
    doc = json.loads((tmp_path / "json" / "cat" / "cat_1.json").read_text())
    assert (tmp_path / "json" / "cat" / doc["imagePath"]).resolve() == images / "cat" / "cat_1.png"

    result = run_cli("labelme_to_mask.py", "--json_dir", tmp_path / "json",
                     "--mask_dir", tmp_path / "masks", "--image_dir", images)
    assert result.returncode == 0, result.stderr
    for rel in ("cat/cat_0.png", "cat/cat_1.png", "dog/dog_1.png"):
        with Image.open(tmp_path / "masks" / rel) as im:
            assert iou(np.asarray(im), blob()) >= 0.9


def test_annotate_script_explains_itself_without_a_display(tmp_path):
    (tmp_path / "low" / "c0").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["image_dir"] = str(tmp_path / "low")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", "scripts/annotate.sh"], cwd=root, env=env, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "pip install labelme" in out and "labelme_to_mask" in out


def test_image_path_naming_the_json_itself_uses_image_data(tmp_path):
    """labelme's tutorial file: ``imagePath`` is the JSON's own name, the image is embedded."""
    p = write_json(tmp_path / "cat" / "tutorial.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_path="tutorial.json", image_data=png_b64(np.zeros((H, W, 3), np.uint8)))
    np.testing.assert_array_equal(json_to_mask(p), block(1, 3, 1, 3))
    # a non-image imagePath other than the JSON itself: the embedded image is used too
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    q = write_json(tmp_path / "cat" / "other.json", [shape([[2, 2], [4, 5]], "rectangle")],
                   image_path="notes.txt", image_data=png_b64(np.zeros((H, W, 3), np.uint8)))
    np.testing.assert_array_equal(json_to_mask(q), block(2, 5, 2, 4))
    # the embedded image is still checked against the declared size
    r = write_json(tmp_path / "cat" / "wrong.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_path="wrong.json",
                   image_data=png_b64(np.zeros((H + 1, W, 3), np.uint8)))
    with pytest.raises(ValueError, match="wrong.json.*mismatch"):
        json_to_mask(r)
    # without imageData an undecodable imagePath is still an error naming it
    s = write_json(tmp_path / "cat" / "nodata.json", [shape([[1, 1], [3, 3]], "rectangle")],
                   image_path="notes.txt")
    with pytest.raises(ValueError, match=r"nodata.json.*cannot read image .*notes.txt"):
        json_to_mask(s)


def test_exif_rotated_jpeg_mask_agrees_with_the_loaded_image(tmp_path):
    """labelme annotates the EXIF-rotated image; the loader must decode that same frame."""
    import loaders
    from labelme.utils import apply_exif_orientation
    root = tmp_path / "data"
    stored = np.zeros((24, 40, 3), np.uint8)     # as stored in the file: 40 wide, 24 high
    stored[2:10, 3:15] = 255                     # an object near the stored top-left corner
    for orientation, stem in ((6, "rot90"), (3, "rot180")):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = root / "train" / "cat" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(stored).save(path, quality=100, exif=exif)
        with Image.open(path) as img:            # the frame labelme shows and annotates
            shown = np.asarray(apply_exif_orientation(img).convert("L"))
        ys, xs = np.nonzero(shown > 127)
        write_json(tmp_path / "json" / "cat" / f"{stem}.json",
                   [shape([[int(xs.min()), int(ys.min())], [int(xs.max()), int(ys.max())]],
                          "rectangle")], height=shown.shape[0], width=shown.shape[1],
                   image_path=f"../../data/train/cat/{stem}.jpg")
    n_ok, failures = convert_folder(tmp_path / "json", tmp_path / "masks", root / "train")
    assert (n_ok, failures) == (2, [])
    ds = loaders.build_dataset("stl10", root, "train", mask_dir=tmp_path / "masks")
    assert {rel for rel, _ in ds.samples} == {"cat/rot90.jpg", "cat/rot180.jpg"}
    for i in range(len(ds)):
        image, _ = ds.load(i)[:2]
        mask = np.asarray(Image.open(ds.mask_paths[i]))
        assert image.size == (mask.shape[1], mask.shape[0])
        bright = np.asarray(image.convert("L")) > 127
        assert (bright == (mask > 0)).mean() > 0.99, ds.samples[i][0]
