"""labelme JSON annotations -> binary foreground masks (README: Annotating with labelme).

``JSON_ROOT/<class>/<stem>.json`` becomes ``MASK_ROOT/<class>/<stem>.png``: single-channel
uint8, 255 = object, 128 = ignore, 0 = background, the image's height and width (the codes
``loaders.decode_mask`` reads). The mask is named after
the JSON file's own relative path, never after its ``imagePath`` field, so the mask loader
finds it next to ``IMAGE_ROOT/<class>/<stem>.<ext>``.

The foreground is the union of every area shape (polygon, rectangle, circle, mask, oriented
rectangle) whose label is not ``__ignore__``, rasterised by labelme itself
(``labelme.utils.shapes_to_label``). ``__ignore__`` shapes mean "don't care" (as in labelme's
own converters): their pixels are 128 and weigh 0 in the spatial loss, unless an object
shape covers them too (object wins, so the object is never cut). Lines and points have no
area and are skipped. The
expansion ``e`` of the mask happens at training time, not here.

Example::

    python preprocessing/labelme_to_mask.py --json_dir output/sift/low --mask_dir output/masks
"""
from __future__ import annotations

import argparse
import base64
import binascii
import glob
import io
import json
import os
import sys
from pathlib import Path
from pathlib import PureWindowsPath

import numpy as np
import PIL.Image
from labelme.utils import apply_exif_orientation, img_b64_to_arr, shapes_to_label
from tqdm import tqdm

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401
from utils.cli import HelpFormatter, run_main  # noqa: E402
from utils.io import atomic_write, refuse_overlap, safe_child  # noqa: E402

IGNORE_LABEL = "__ignore__"
OBJECT_VALUE, IGNORE_VALUE, BACKGROUND_VALUE = 255, 128, 0
# Shapes without area; every other shape type is rasterised by labelme (which rejects unknown ones).
NON_AREA_SHAPES = {"line", "linestrip", "point", "points"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_size(source: str | os.PathLike | bytes) -> tuple[int, int]:
    """``(height, width)`` of an image file or encoded image bytes, after EXIF rotation.

    labelme shows (and annotates) images EXIF-rotated, so that is the size to compare with.
    """
    opened = PIL.Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    with opened:
        width, height = apply_exif_orientation(opened).size
    return height, width


def _find_image(json_path: Path, image_path: object, json_root: Path,
                image_root: Path | None) -> Path | None:
    """The image a JSON annotates, or None.

    ``imagePath`` is tried first, resolved from the JSON's folder, but only if it stays inside
    ``json_root`` or ``image_root``; then ``<stem>.<ext>`` beside the JSON; then
    ``image_root/<class>/<stem>.<ext>``.
    """
    roots = [json_root.resolve()] + ([image_root.resolve()] if image_root else [])
    candidates = []
    if isinstance(image_path, str) and image_path:
        target = (json_path.parent / PureWindowsPath(image_path).as_posix()).resolve()
        # labelme's own tutorial file names itself (its image is embedded as imageData).
        if target != json_path.resolve() and any(target == r or r in target.parents
                                                  for r in roots):
            candidates.append(target)
    rel = json_path.relative_to(json_root)
    folders = [json_path.parent] + ([image_root / rel.parent] if image_root else [])
    for folder in folders:
        found = glob.glob(glob.escape(str(folder / json_path.stem)) + ".*")
        candidates += sorted(Path(p) for p in found if Path(p).suffix.lower() in IMAGE_EXTS)
    return next((p for p in candidates if p.is_file()), None)


def _check_points(shape: dict, index: int) -> list[list[float]]:
    points = shape.get("points")
    if not isinstance(points, list) or not points or not all(
            isinstance(p, (list, tuple)) and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
            for p in points):
        raise ValueError(f"shape {index}: 'points' must be a non-empty list of [x, y]")
    return [[float(x), float(y)] for x, y in points]


def _shape_to_bool(shape: dict, index: int, height: int, width: int) -> np.ndarray:
    """One area shape rasterised by labelme -> ``(H, W)`` bool."""
    shape_type = shape.get("shape_type")
    points = _check_points(shape, index)
    shape = {**shape, "points": points, "group_id": None}
    if shape_type == "mask":
        encoded = shape.get("mask")
        if not isinstance(encoded, str):
            raise ValueError(f"shape {index}: shape_type 'mask' needs a base64 PNG in 'mask'")
        try:
            bitmap = img_b64_to_arr(encoded).astype(bool)
        except (binascii.Error, OSError, ValueError) as e:
            raise ValueError(f"shape {index}: 'mask' is not a base64 PNG ({e})") from e
        if bitmap.ndim == 3:
            bitmap = bitmap.any(axis=2)
        if len(points) != 2:
            raise ValueError(f"shape {index}: shape_type 'mask' needs 2 points (its box)")
        (x1, y1), (x2, y2) = np.asarray(points).astype(int)
        if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height) \
                or bitmap.shape != (y2 - y1 + 1, x2 - x1 + 1):
            raise ValueError(f"shape {index}: mask of size {bitmap.shape} does not fit its "
                             f"box {points} in a {height}x{width} image")
        shape["mask"] = bitmap
    try:
        cls, _ = shapes_to_label((height, width), [shape], {shape["label"]: 1})
    except AssertionError as e:  # labelme checks point counts with assert
        raise ValueError(f"shape {index} ({shape_type}): {e}") from e
    except ValueError as e:
        raise ValueError(f"shape {index} ({shape_type}): {e}") from e
    return cls > 0


def _decode_image_data(data: object) -> bytes:
    if not isinstance(data, str):
        raise ValueError("'imageData' must be a base64 string or null")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as e:
        raise ValueError(f"'imageData' is not base64 ({e})") from e


def _json_to_mask(json_path: Path, image_root: Path | None, json_root: Path) -> np.ndarray:
    with open(json_path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError("not a labelme JSON object")
    missing = [k for k in ("shapes", "imageHeight", "imageWidth") if k not in data]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    height, width = data["imageHeight"], data["imageWidth"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise ValueError(f"imageHeight/imageWidth must be positive integers, got {height}x{width}")

    # Cross-check the declared size against every image we can see (embedded, then on disk).
    sources: list[tuple[str, bytes | Path]] = []
    if data.get("imageData") is not None:
        sources.append(("imageData", _decode_image_data(data["imageData"])))
    found = _find_image(json_path, data.get("imagePath"), json_root, image_root)
    if found is not None:
        sources.append((str(found), found))
    for name, source in sources:
        try:
            actual = image_size(source)
        except (OSError, ValueError) as e:
            if isinstance(source, Path) and len(sources) > 1:
                continue   # imagePath is not an image: labelme shows the embedded imageData
            raise ValueError(f"cannot read image {name}: {e}") from e
        if actual != (height, width):
            raise ValueError(f"image size mismatch: imageHeight x imageWidth = {height}x{width} "
                             f"but {name} is {actual[0]}x{actual[1]}")

    shapes = data["shapes"]
    if not isinstance(shapes, list):
        raise ValueError("'shapes' must be a list")
    mask = np.zeros((height, width), dtype=bool)
    ignore = np.zeros((height, width), dtype=bool)
    outside = []
    for index, shape in enumerate(shapes):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise ValueError(f"shape {index}: must be an object with a string 'label'")
        if shape.get("shape_type") in NON_AREA_SHAPES:
            continue
        area = _shape_to_bool(shape, index, height, width)
        if shape["label"] == IGNORE_LABEL:
            ignore |= area
        else:
            mask |= area
            if not area.any():
                outside.append(f"shape {index} ({shape['label']!r})")
    if outside and not mask.any():
        raise ValueError(f"{', '.join(outside)} lie(s) outside the {height}x{width} image "
                         f"(no pixel inside it); no mask written")
    return np.where(mask, OBJECT_VALUE,
                    np.where(ignore, IGNORE_VALUE, BACKGROUND_VALUE)).astype(np.uint8)


def json_to_mask(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 json_root: str | os.PathLike | None = None) -> np.ndarray:
    """Rasterise one labelme JSON file -> ``(H, W)`` uint8 mask, 255 = object, 128 = ignore
    (``__ignore__`` shapes not covered by an object), 0 = background.

    ``H, W`` come from ``imageHeight``/``imageWidth``; the embedded ``imageData`` and the image
    file (found via ``imagePath`` when it stays inside ``json_root``/``image_root``, else by
    the JSON's stem beside it or under ``image_root/<class>/``) are only read to cross-check
    that size. When ``imageData`` is embedded, a file that is not a decodable image (e.g. an
    ``imagePath`` naming the JSON itself, as in labelme's tutorial) is skipped: labelme shows
    the embedded image. ``json_root`` defaults to the JSON's folder.

    Raises ValueError naming the JSON for bad syntax, missing keys, bad shapes or a size
    mismatch; OSError if the JSON cannot be read.
    """
    json_path = Path(json_path)
    json_root = Path(json_root) if json_root is not None else json_path.parent
    image_root = Path(image_root) if image_root is not None else None
    try:
        return _json_to_mask(json_path, image_root, json_root)
    except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{json_path}: {e}") from e


def write_mask(mask: np.ndarray, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as f:
        PIL.Image.fromarray(mask, mode="L").save(f, format="PNG")


def convert_files(json_files: list[Path], json_root: str | os.PathLike,
                  mask_root: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  ) -> tuple[int, list[tuple[Path, str]]]:
    """Convert each file to ``mask_root/<path relative to json_root>.png``.

    Returns ``(n_ok, failures)`` with one ``(json_path, reason)`` per file that failed; a
    failure does not stop the others. An annotation with no foreground shape is a failure
    (an all-background mask would penalise every pixel) and writes no mask.
    """
    json_root, mask_root = Path(json_root), Path(mask_root)
    n_ok, failures = 0, []
    for json_path in tqdm(json_files, desc="labelme -> mask", unit="json"):
        try:
            rel = json_path.relative_to(json_root)
            out = safe_child(mask_root, rel.with_suffix(".png"))
            mask = json_to_mask(json_path, image_root, json_root)
            if not (mask == OBJECT_VALUE).any():
                raise ValueError(f"no foreground shape (only {IGNORE_LABEL}, "
                                 "lines or points); no mask written")
            write_mask(mask, out)
            n_ok += 1
        except (ValueError, OSError) as e:
            reason = str(e) if str(json_path) in str(e) else f"{json_path}: {e}"
            failures.append((json_path, reason))
            tqdm.write(f"FAILED {reason}", file=sys.stderr)
    return n_ok, failures


def convert_folder(json_root: str | os.PathLike, mask_root: str | os.PathLike,
                   image_root: str | os.PathLike | None = None,
                   ) -> tuple[int, list[tuple[Path, str]]]:
    """Convert every ``json_root/**/*.json``; see :func:`convert_files`."""
    json_root = Path(json_root)
    if not json_root.is_dir():
        raise FileNotFoundError(f"JSON folder not found: {json_root}")
    files = sorted(json_root.rglob("*.json"))
    flat = [p for p in files if p.parent == json_root]
    if flat:
        tqdm.write(f"warning: {len(flat)} JSON file(s) directly in {json_root} have no class "
                   f"folder; their masks land in {mask_root} itself (e.g. {flat[0].name})",
                   file=sys.stderr)
    return convert_files(files, json_root, mask_root, image_root)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="labelme JSON -> foreground PNG masks (255 = object, 128 = __ignore__, "
                    "0 = background).",
        formatter_class=HelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--json_dir", type=Path,
                        help="folder of <class>/<stem>.json labelme files (searched "
                             "recursively); this or --json_file (default: none)")
    source.add_argument("--json_file", type=Path,
                        help="one <class>/<stem>.json file; its folder name is the class; "
                             "this or --json_dir (default: none)")
    parser.add_argument("--mask_dir", type=Path, required=True, default=argparse.SUPPRESS,
                        help="masks are written to MASK_DIR/<class>/<stem>.png; must not "
                             "overlap the JSON or image folders (required)")
    parser.add_argument("--image_dir", type=Path, default=None,
                        help="IMAGE_DIR/<class>/<stem>.<ext>, to cross-check image sizes when the "
                             "images are not beside the JSON files (default: none)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Convert; user errors (missing input, overlapping folders) raise for :func:`run_main`."""
    if args.json_file is not None:
        if not args.json_file.is_file():
            raise FileNotFoundError(f"--json_file {args.json_file} not found")
        # <class>/<stem>.json: the root is two levels up, so the mask keeps the class folder
        # (resolved first: a bare "0.json" run inside its class folder has no parents).
        json_file = args.json_file.resolve()
        json_root = json_file.parent.parent
        refuse_overlap(args.mask_dir, {"--json_file's class folder": json_file.parent,
                                       "--image_dir": args.image_dir}, "--mask_dir")
        n_ok, failures = convert_files([json_file], json_root, args.mask_dir, args.image_dir)
        total = 1
    else:
        if not args.json_dir.is_dir():
            raise FileNotFoundError(f"--json_dir {args.json_dir} not found")
        refuse_overlap(args.mask_dir, {"--json_dir": args.json_dir,
                                       "--image_dir": args.image_dir}, "--mask_dir")
        n_ok, failures = convert_folder(args.json_dir, args.mask_dir, args.image_dir)
        total = n_ok + len(failures)
    print(f"converted {n_ok}/{total} labelme JSON file(s) to masks in {args.mask_dir}")
    if failures:
        print(f"{len(failures)} failed:", file=sys.stderr)
        for _, reason in failures:
            print(f"  {reason}", file=sys.stderr)
        return 1
    if total == 0:
        print("no JSON files found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main, get_args_parser())
