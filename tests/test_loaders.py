"""Loaders: shapes, normalisation, joint mask transforms, bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

import loaders
from fakedata import make_image_folder


def test_registry_names_and_unknown():
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "stl10", "mnin", "digits"):
        assert name in loaders.DATASETS
    assert loaders.get_spec("cifar10").batch_size == 128
    assert loaders.get_spec("stl10").batch_size == 32 and loaders.get_spec("stl10").size == 224
    with pytest.raises(KeyError, match="cifar10"):
        loaders.get_spec("imagenet21k")


def test_folder_dataset_shapes_labels_paths(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=3, per_class=4)
    loader = loaders.load_data("digits", root, "test", batch_size=5)
    images, labels, paths = next(iter(loader))
    assert images.shape == (5, 1, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 0, 0, 1]
    assert paths[0] == "c0/img0.png"
    # normalisation: (x/255 - mean) / std, pixel-exact
    raw = np.asarray(Image.open(root / "test" / "c0" / "img0.png"), dtype=np.float32) / 255
    spec = loaders.get_spec("digits")
    torch.testing.assert_close(images[0, 0], torch.from_numpy((raw - spec.mean[0]) / spec.std[0]))


def test_class_order_from_classes_txt(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=3, per_class=1)
    (root / "classes.txt").write_text("c2\nc0\nc1\n")
    ds = loaders.build_dataset("digits", root, "train")
    assert ds.classes == ["c2", "c0", "c1"]
    assert dict(ds.samples)["c2/img0.png"] == 0


def test_in_channels_honoured(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=1)
    x3 = loaders.build_dataset("digits", root, "train", in_channels=3)[0][0]
    assert x3.shape == (3, 32, 32)
    assert loaders.build_dataset("cifar10", root, "train", in_channels=1)[0][0].shape == (1, 32, 32)


def test_large_images_resized(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=1, size=96, channels=3)
    assert loaders.build_dataset("stl10", root, "train")[0][0].shape == (3, 224, 224)


def test_joint_flip_keeps_asymmetric_mask_aligned(tmp_path):
    root = tmp_path / "d"
    (root / "train" / "a").mkdir(parents=True)
    (root / "m" / "a").mkdir(parents=True)
    img = np.zeros((96, 96, 3), np.uint8)
    img[10:30, 5:60] = 255                       # an L-shaped, asymmetric object
    img[10:80, 5:20] = 255
    Image.fromarray(img).save(root / "train" / "a" / "x.jpg", quality=100)
    Image.fromarray((img[..., 0] > 0).astype(np.uint8) * 255).save(root / "m" / "a" / "x.png")
    ds = loaders.build_dataset("stl10", root, "train", mask_dir=root / "m")
    flips = set()
    for seed in range(12):       # resize + random h/v flips applied to both
        torch.manual_seed(seed)
        image, label, rel, mask, annotated = ds[0]
        assert annotated and mask.shape == (1, 224, 224)
        bright = image.mean(0) > 0
        agree = (bright == (mask[0] > 0.5)).float().mean()
        assert agree > 0.98
        flips.add(tuple(bright.nonzero()[0].tolist()))
    assert len(flips) > 1          # the flips did happen


def test_unannotated_marked_and_missing_masks_error(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2, masks=True)
    (root / "masks" / "train" / "c1" / "img0.png").unlink()
    ds = loaders.build_dataset("digits", root, "train", mask_dir=root / "masks" / "train")
    marks = {ds[i][2]: ds[i][4] for i in range(len(ds))}
    assert marks["c1/img0.png"] is False and marks["c0/img0.png"] is True
    assert ds[[r for r, _ in ds.samples].index("c1/img0.png")][3].sum() == 0
    with pytest.raises(FileNotFoundError, match=r"c0/img0\.png.*looked for.*nowhere"):
        loaders.build_dataset("digits", root, "train", mask_dir=tmp_path / "nowhere")


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        loaders.build_dataset("digits", tmp_path / "missing", "train")
    root = make_image_folder(tmp_path / "d", per_class=2)
    (root / "train" / "c1" / "img0.png").write_bytes(b"not a png")
    # found up front (the size check reads every header), a user error naming the file
    with pytest.raises(ValueError, match=r"cannot decode image .*c1/img0\.png"):
        loaders.build_dataset("digits", root, "train")
    (root / "train" / "c1" / "img0.png").unlink()
    for f in (root / "train" / "c2").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"class 2 \('c2'\) has no images"):
        loaders.build_dataset("digits", root, "train")


def test_test_split_missing_a_class_keeps_the_train_labels(tmp_path):
    """Without classes.txt the label order is the train split's class folders, for every
    split: a test split without ``c1`` still labels ``c2`` as 2 (and warns)."""
    import shutil
    root = make_image_folder(tmp_path / "d", num_classes=3, per_class=2)
    (root / "classes.txt").unlink()
    shutil.rmtree(root / "test" / "c1")
    with pytest.warns(UserWarning, match=r"no images of class\(es\) \['c1'\]"):
        ds = loaders.build_dataset("digits", root, "test")
    assert ds.classes == ["c0", "c1", "c2"]
    assert dict(ds.samples) == {"c0/img0.png": 0, "c0/img1.png": 0,
                                "c2/img0.png": 2, "c2/img1.png": 2}
    # the train split is where a missing class is an error
    shutil.rmtree(root / "train" / "c2")
    (root / "train" / "c2").mkdir()
    with pytest.raises(ValueError, match=r"class 2 \('c2'\) has no images"):
        loaders.build_dataset("digits", root, "train")


def test_split_folder_outside_the_label_order_is_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d", num_classes=3, per_class=1)
    (root / "classes.txt").unlink()
    (root / "test" / "c9").mkdir()
    Image.new("L", (32, 32)).save(root / "test" / "c9" / "x.png")
    with pytest.raises(ValueError, match=r"test has folder\(s\) \['c9'\] that are not classes"):
        loaders.build_dataset("digits", root, "test")


def test_mask_file_codes_object_ignore_background(tmp_path):
    """255 / 128 / 0 in the file -> 1 / 2 / 0 in the loaded mask, also after the resize."""
    root = tmp_path / "d"
    (root / "train" / "a").mkdir(parents=True)
    (root / "m" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "train" / "a" / "x.png")
    values = np.zeros((8, 8), np.uint8)
    values[:4] = 255
    values[4:6, :4] = 128
    Image.fromarray(values).save(root / "m" / "a" / "x.png")
    expected = np.zeros((8, 8), np.float32)
    expected[:4] = loaders.MASK_OBJECT
    expected[4:6, :4] = loaders.MASK_IGNORE
    ds = loaders.build_dataset("digits", root, "train", mask_dir=root / "m",
                               train_transform=False)
    np.testing.assert_array_equal(ds[0][3][0].numpy(), expected)
    big = loaders.build_dataset("stl10", root, "train", mask_dir=root / "m",
                                train_transform=False)[0][3][0]       # 8 -> 224 px, nearest
    np.testing.assert_array_equal(big[::28, ::28].numpy(), expected)
    np.testing.assert_array_equal(loaders.decode_mask(np.array([0, 63, 64, 191, 192, 255])),
                                  [0, 0, 2, 2, 1, 1])


def test_mask_size_mismatch_found_when_the_dataset_is_built(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2, masks=True)
    masks = root / "masks" / "train"
    Image.new("L", (30, 31)).save(masks / "c1" / "img1.png")
    with pytest.raises(ValueError, match=r"mask .*c1/img1\.png is 30x31 \(WxH\) but its image "
                                         r".*train/c1/img1\.png is 32x32"):
        loaders.build_dataset("digits", root, "train", mask_dir=masks)


def test_orphan_masks_are_reported(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=2, masks=True)
    masks = root / "masks" / "train"
    for name in ("c0/gone.png", "c0/img0_old.png", "c9/x.png", "c1/img0.jpg"):
        (masks / name).parent.mkdir(exist_ok=True)
        Image.new("L", (32, 32)).save(masks / name)
    with pytest.warns(UserWarning, match=r"4 mask file\(s\) in .* match no image .*"
                                         r"\['c0/gone.png', 'c0/img0_old.png', 'c1/img0.jpg'"):
        ds = loaders.build_dataset("digits", root, "train", mask_dir=masks)
    assert ds.num_annotated == len(ds) == 6
