"""Replayed annotated images: every batch carries k of them, seeded per epoch."""
import pytest
import torch
from torch.utils.data import RandomSampler

from loaders.replay import ReplayBatchSampler


def batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_each_batch_is_a_full_batch_plus_k_distinct_annotated():
    replay = [3, 7, 11, 19, 23]
    gen = torch.Generator().manual_seed(0)
    s = ReplayBatchSampler(RandomSampler(range(50), generator=gen), 8, replay, k=3, seed=1)
    got = batches(s, 1)
    assert len(got) == len(s) == 7
    # the main part of the batches is the shuffled dataset, each index once
    assert sorted(i for b in got for i in b[:len(b) - 3]) == list(range(50))
    assert [len(b) for b in got] == [11] * 6 + [2 + 3]
    for b in got:
        tail = b[-3:]
        assert len(set(tail)) == 3 and set(tail) <= set(replay)


def test_draws_are_seeded_by_seed_and_epoch():
    def tails(seed, epoch, rank=0):
        s = ReplayBatchSampler(list(range(40)), 10, list(range(100, 120)), 4, seed, rank=rank)
        return [b[-4:] for b in batches(s, epoch)]
    assert tails(0, 1) == tails(0, 1)
    assert tails(0, 1) != tails(0, 2) and tails(0, 1) != tails(1, 1)
    assert tails(0, 1) != tails(0, 1, rank=1)


def test_k_larger_than_the_annotated_set_replays_all_of_it():
    s = ReplayBatchSampler(list(range(10)), 5, [1, 2], k=8, drop_last=True)
    got = batches(s, 0)
    assert len(got) == len(s) == 2 and all(sorted(b[-2:]) == [1, 2] for b in got)


def test_refuses_no_annotations_and_bad_k():
    with pytest.raises(ValueError, match="annotated"):
        ReplayBatchSampler(list(range(10)), 5, [], k=2)
    with pytest.raises(ValueError, match="positive"):
        ReplayBatchSampler(list(range(10)), 5, [1], k=0)
