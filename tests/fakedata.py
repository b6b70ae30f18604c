"""Tiny image-folder datasets written in the real on-disk layout."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root, num_classes=3, per_class=6, size=32, channels=1, splits=("train", "test"),
                      masks=False, seed=0):
    """``root/{split}/c{k}/img{i}.png`` + ``classes.txt``; class k draws a bright square at a
    class-dependent place, so a small model can learn it. With ``masks``, object masks go to
    ``root/masks/{split}/c{k}/img{i}.png``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    names = [f"c{k}" for k in range(num_classes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for split in splits:
        for k, name in enumerate(names):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (size, size, channels), dtype=np.uint8)
                y0 = (k * size // num_classes) % (size - 8)
                mask = np.zeros((size, size), np.uint8)
                mask[y0:y0 + 8, 4:12] = 255
                img[mask > 0] = 220
                mode = "L" if channels == 1 else "RGB"
                Image.fromarray(img[..., 0] if channels == 1 else img, mode).save(
                    root / split / name / f"img{i}.png")
                if masks:
                    (root / "masks" / split / name).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask).save(root / "masks" / split / name / f"img{i}.png")
    return root
