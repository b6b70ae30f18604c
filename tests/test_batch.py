"""Datasets and loaders yield named tuples: Batch with masks, PlainBatch without."""
import pytest
import torch

import loaders
from fakedata import make_image_folder
from loaders import Batch, PlainBatch, batch_masks


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("batch"), num_classes=2, per_class=3,
                             masks=True)


@pytest.mark.parametrize("data_mode", ["folder", "memory"])
def test_samples_and_batches_are_named(data, data_mode):
    plain = loaders.build_dataset("digits", data, "train", data_mode=data_mode,
                                  train_transform=False)
    masked = loaders.build_dataset("digits", data, "train", data_mode=data_mode,
                                   train_transform=False,
                                   mask_dir=data / "masks" / "train")
    sample = plain[4]
    assert type(sample) is PlainBatch and (sample.label, sample.path) == (1, "c1/img1.png")
    item = masked[4]
    assert type(item) is Batch and item.path == "c1/img1.png" and item.annotated is True
    assert item.mask.shape == (1, 32, 32) and item.mask.max() == loaders.MASK_OBJECT
    torch.testing.assert_close(item.image, sample.image)
    for dataset, kind in ((plain, PlainBatch), (masked, Batch)):
        batch = next(iter(loaders.make_loader(dataset, 4, False)))
        assert type(batch) is kind and batch.image.shape == (4, 1, 32, 32)
        assert batch.label.tolist() == [0, 0, 0, 1] and list(batch.path)[0] == "c0/img0.png"
    masks, annotated = batch_masks(batch, torch.device("cpu"), "beta > 0")
    assert masks.shape == (4, 1, 32, 32) and annotated.dtype == torch.bool and annotated.all()


def test_unannotated_image_has_zero_mask(tmp_path, data):
    (data / "masks" / "train" / "c0" / "img2.png").rename(tmp_path / "away.png")
    try:
        ds = loaders.build_dataset("digits", data, "train", mask_dir=data / "masks" / "train")
        item = ds[2]
        assert item.annotated is False and item.mask.abs().sum() == 0
    finally:
        (tmp_path / "away.png").rename(data / "masks" / "train" / "c0" / "img2.png")


def test_masks_of_a_plain_batch_name_the_need():
    batch = PlainBatch(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match=r"beta > 0 needs masks: give --mask_dir"):
        batch_masks(batch, torch.device("cpu"), "beta > 0")
