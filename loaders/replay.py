"""Replay of the annotated images: every training batch also carries ``k`` of them.

With the paper's budget (20 masks per class) the annotated images are 2 % of a training set
like Fashion-MNIST's, so the spatial constraint sees about two of them per batch of 128 and
acts on a fraction of the steps. Replaying ``k`` annotated images in every batch makes it act
at every step; the cross-entropy also sees them (they are training images).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler

from loaders.memory import MemoryLoader


class ReplayBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices from ``sampler``, each followed by ``k`` indices drawn
    from ``replay`` (distinct among themselves; all of ``replay`` when ``k`` exceeds it; an
    annotated image may also be in the batch's own part).

    Args:
        sampler: the training index order (a shuffling or distributed sampler).
        batch_size: indices taken from ``sampler`` per batch.
        replay: dataset indices of the annotated images.
        k: replayed indices per batch.
        seed: draws are seeded from ``(seed, epoch, rank)``; :meth:`set_epoch` advances it,
            so a resumed run draws as an uninterrupted one.
    """

    def __init__(self, sampler: Sampler[int] | Iterable[int], batch_size: int,
                 replay: Sequence[int], k: int, seed: int = 0, drop_last: bool = False,
                 rank: int = 0):
        if k < 1:
            raise ValueError(f"replay k must be positive, got {k}")
        if len(replay) == 0:
            raise ValueError("replay needs at least one annotated image (no masks were found)")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.replay = torch.as_tensor(list(replay), dtype=torch.long)
        self.k = min(k, len(self.replay))
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _draw(self, generator: torch.Generator) -> list[int]:
        pick = torch.randperm(len(self.replay), generator=generator)[:self.k]
        return self.replay[pick].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator()
        generator.manual_seed((self.seed * 100003 + self.epoch) * 1009 + self.rank)
        batch: list[int] = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.batch_size:
                yield batch + self._draw(generator)
                batch = []
        if batch and not self.drop_last:
            yield batch + self._draw(generator)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def with_replay(loader: DataLoader | MemoryLoader, k: int, seed: int = 0,
                rank: int = 0) -> DataLoader | MemoryLoader:
    """``loader`` (over a :class:`~loaders.folder.MaskedImageFolder` or a masked
    :class:`~loaders.memory.MemoryDataset`) with ``k`` annotated
    images appended to every batch. Shuffling keeps ``loader``'s generator (reseeded per
    epoch by ``train.fit``) or its distributed sampler."""
    dataset = loader.dataset
    replay = [i for i, path in enumerate(getattr(dataset, "mask_paths", [])) if path is not None]
    inner = loader.sampler
    if inner is None or isinstance(inner, (SequentialSampler, RandomSampler)):
        inner = RandomSampler(dataset, generator=loader.generator)
    batches = ReplayBatchSampler(inner, loader.batch_size, replay, k, seed, loader.drop_last,
                                 rank)
    if isinstance(loader, MemoryLoader):
        return loader.with_batch_sampler(batches)
    return DataLoader(dataset, batch_sampler=batches, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                      generator=loader.generator)
