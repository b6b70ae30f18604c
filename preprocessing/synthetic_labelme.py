"""Stand-in for the human annotator: ground-truth masks -> labelme JSON files.

The offline quickstart has no one to draw polygons, so this traces each sifted image's
ground-truth mask into polygons and writes the labelme JSON a person would have saved
(``OUT/<class>/<stem>.json``, ``imagePath`` relative to the JSON). The rest of the pipeline
(``labelme_to_mask.py``, training) cannot tell the difference.

Example::

    python preprocessing/synthetic_labelme.py --image_dir output/sift/low \\
        --gt_mask_dir data/toy/masks --json_dir output/annotations --per_class 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import labelme
import numpy as np
import PIL.Image

if not __package__:  # run as a script: see _bootstrap.py beside this file
    import _bootstrap  # noqa: F401
from preprocessing.labelme_to_mask import IMAGE_EXTS, image_size as read_image_size  # noqa: E402
from utils.io import atomic_write_text, safe_child  # noqa: E402
from utils.cli import run_main  # noqa: E402


def mask_to_labelme(mask: np.ndarray, image_path_rel: str, label: str = "object",
                    image_size: tuple[int, int] | None = None, epsilon: float = 0.5,
                    min_area: float = 2.0) -> dict:
    """A labelme JSON dict with one polygon per outer contour of ``mask`` (``(h, w)``, >0 = object).

    Contours come from ``cv2.findContours`` (outer ones only, holes are filled), simplified by
    ``cv2.approxPolyDP(epsilon)``; contours with fewer than 3 points or an area below
    ``min_area`` pixels are dropped. Vertices are pixel indices, which is labelme's own
    convention (its rasteriser fills the boundary pixels). ``image_size = (H, W)`` of the
    image, if it differs from the mask's, rescales the vertices.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (h, w), got shape {mask.shape}")
    h, w = mask.shape
    height, width = image_size if image_size is not None else (h, w)
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    shapes = []
    for contour in contours:
        if epsilon > 0:
            contour = cv2.approxPolyDP(contour, epsilon, True)
        if len(contour) < 3 or cv2.contourArea(contour) < min_area:
            continue
        xy = contour.reshape(-1, 2).astype(np.float64) * [width / w, height / h]
        shapes.append({
            "label": label,
            "points": [[float(x), float(y)] for x, y in xy],
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
        })
    return {
        "version": labelme.__version__,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path_rel,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write labelme JSON files traced from ground-truth masks (a simulated "
                    "annotator for the offline quickstart).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_dir", type=Path, required=True,
                        help="sifted images, IMAGE_DIR/<class>/<stem>.<ext>")
    parser.add_argument("--gt_mask_dir", type=Path, required=True,
                        help="ground-truth masks, GT_MASK_DIR/<class>/<stem>.png (>0 = object)")
    parser.add_argument("--json_dir", type=Path, required=True,
                        help="output folder, JSON_DIR/<class>/<stem>.json")
    parser.add_argument("--per_class", type=int, default=20,
                        help="annotate at most this many images per class (sorted order; 0 = all)")
    parser.add_argument("--label", default="object", help="label given to every polygon")
    return parser


def main(args: argparse.Namespace) -> int:
    if not args.image_dir.is_dir():
        print(f"image folder not found: {args.image_dir}", file=sys.stderr)
        return 2
    written, missing, empty = 0, 0, 0
    for class_dir in sorted(p for p in args.image_dir.iterdir() if p.is_dir()):
        images = _images(class_dir)
        if args.per_class > 0:
            images = images[:args.per_class]
        for image in images:
            rel = Path(class_dir.name, image.stem)
            gt_path = args.gt_mask_dir / rel.with_suffix(".png")
            if not gt_path.is_file():
                print(f"warning: no ground-truth mask {gt_path} for {image}; skipped",
                      file=sys.stderr)
                missing += 1
                continue
            with PIL.Image.open(gt_path) as gt:
                mask = np.asarray(gt.convert("L"))
            out = safe_child(args.json_dir, rel.with_suffix(".json"))
            doc = mask_to_labelme(mask, os.path.relpath(image.resolve(), out.parent),
                                  label=args.label, image_size=read_image_size(image))
            if not doc["shapes"]:
                print(f"warning: ground-truth mask {gt_path} has no object; skipped",
                      file=sys.stderr)
                empty += 1
                continue
            atomic_write_text(out, json.dumps(doc, indent=2) + "\n")
            written += 1
    print(f"wrote {written} labelme JSON file(s) to {args.json_dir} "
          f"({missing} without a ground-truth mask, {empty} with an empty mask)")
    return 0 if written else 1


if __name__ == "__main__":
    run_main(main, get_args_parser())
