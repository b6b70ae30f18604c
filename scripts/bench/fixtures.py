"""What the benchmarks measure on: synthetic batches, images and statistics, models, one
training step, the feature shape of a layer, a doctor loss."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

import loaders
import models
from core import engine
from core.channel_stats import ChannelStatistics
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm


def csv(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in str(text).split(",") if t.strip()]



def synthetic_batch(batch_size: int, in_channels: int, size: int, num_classes: int,
                    device: torch.device, seed: int = 0) -> loaders.Batch:
    """A :class:`loaders.Batch` as a masked loader yields it; every
    image annotated, its object a random rectangle."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, in_channels, size, size, generator=g)
    labels = torch.arange(batch_size) % num_classes
    masks = torch.zeros(batch_size, 1, size, size)
    for b in range(batch_size):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        masks[b, :, y0:y0 + h, x0:x0 + w] = 1
    return loaders.Batch(images.to(device), labels.to(device),
                         [f"img{b}.png" for b in range(batch_size)], masks.to(device),
                         torch.ones(batch_size, dtype=torch.bool))


class SyntheticImages:
    """``num_images`` random images in batches, made lazily (a loader's memory profile)."""

    def __init__(self, num_images, batch_size, in_channels, size, num_classes, device, seed=0):
        self.num_images, self.batch_size = num_images, batch_size
        self.shape = (in_channels, size, size)
        self.num_classes, self.device, self.seed = num_classes, device, seed

    def __len__(self) -> int:
        return -(-self.num_images // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.num_images, self.batch_size):
            n = min(self.batch_size, self.num_images - start)
            images = torch.randn(n, *self.shape, generator=g)
            labels = (torch.arange(start, start + n) % self.num_classes)
            yield loaders.PlainBatch(images.to(self.device), labels.to(self.device),
                                     [f"img{i}.png" for i in range(start, start + n)])


def random_statistics(model, layers, num_classes, seed=0) -> ChannelStatistics:
    """Statistics with random class sums (only the masks matter for timing)."""
    stats = ChannelStatistics.for_model(model, layers, num_classes)
    g = torch.Generator().manual_seed(seed)
    for name, sums in stats.sums.items():
        stats.sums[name] = torch.rand(sums.shape, generator=g, dtype=torch.float64)
    stats.counts[:] = 1
    return stats


def build(name: str, args, device, in_channels=None) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    return models.load_model(name, in_channels or args.in_channels, args.num_classes,
                             image_size=args.image_size).to(device)


def step_fn(model, batch, device, num_classes, extra_loss=None) -> Callable[[], dict]:
    """One training step through ``core.engine.train_one_epoch`` (forward, CE, extra loss,
    backward, SGD step) on a fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    return lambda: engine.train_one_epoch(model, [batch], optimizer, device, 0, num_classes,
                                          extra_loss, progress=False)


def feature_shape(model, layer, args, device) -> list[int]:
    (_, module), = models.load_modules(model, [layer])
    shapes = []
    handle = module.register_forward_hook(lambda m, i, o: shapes.append(list(o.shape[1:])))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, args.in_channels, args.image_size, args.image_size,
                                     device=device))
    finally:
        handle.remove()
    return shapes[0]


def doctor_loss(model, args, layer, noise_draws=1, noise_delta=0.0) -> DoctorLoss:
    stats = random_statistics(model, [layer], args.num_classes, args.seed)
    terms = [ChannelTerm(model, stats, [layer], args.alpha, num_classes=args.num_classes),
             SpatialTerm(model, [layer], args.beta, expand_px=args.expand_px)]
    return DoctorLoss([t for t in terms if t.weight > 0], model=model,
                      noise_draws=noise_draws, noise_delta=noise_delta)


def frozen(model: torch.nn.Module, on: bool = True) -> torch.nn.Module:
    """Freeze (or unfreeze) the parameters: the diagnosis needs feature gradients only."""
    for p in model.parameters():
        p.requires_grad_(not on)
    return model


def write_synthetic_folder(root: Path, num_images: int, size: int, channels: int,
                           num_classes: int = 10, seed: int = 0) -> Path:
    """``root/train/c<k>/<i>.png`` + ``classes.txt``: smooth random images (an upsampled
    8 × 8 pattern plus mild noise), so PNG decoding costs what it costs on real photos."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    names = [f"c{k}" for k in range(num_classes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    for name in names:
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
    mode = "L" if channels == 1 else "RGB"
    for i in range(num_images):
        coarse = rng.integers(0, 256, (8, 8, channels), dtype=np.uint8)
        img = Image.fromarray(coarse[..., 0] if channels == 1 else coarse, mode)
        pixels = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode).save(root / "train" / names[i % num_classes] / f"{i}.png")
    return root
