"""Dataset settings, one :class:`DatasetSpec` per released dataset name."""
from __future__ import annotations

from dataclasses import dataclass

DATASETS: dict[str, "DatasetSpec"] = {}


@dataclass(frozen=True)
class DatasetSpec:
    """What a loader needs to know about a dataset.

    ``input_size`` is the size the network sees (STL-10 and mini-ImageNet are resized to
    224 px as in the released code). ``hflip`` is off for digit datasets, where a mirrored
    digit is not the same class.
    """
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int | None = None
    hflip: bool = True

    @property
    def size(self) -> int:
        return self.input_size or self.image_size

    @property
    def batch_size(self) -> int:
        """Released batch sizes: 128 at 28/32 px, 32 at 96/224 px."""
        return 128 if self.size <= 64 else 32


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


FOLDER = "folder"   # your own image folder: settings from its data (loaders/custom.py)


def data_names() -> list[str]:
    """Valid ``--data_name`` values: the registered datasets and ``folder``."""
    return sorted([*DATASETS, FOLDER])


def get_spec(data_name: str, data_path=None, in_channels: int | None = None) -> DatasetSpec:
    """The settings of ``data_name``; for ``folder`` read from the data at ``data_path``
    (:func:`loaders.custom.folder_spec`)."""
    if data_name == FOLDER:
        if data_path is None:
            raise ValueError(f"--data_name {FOLDER} reads its settings from the data: "
                             f"no data folder given")
        from loaders.custom import folder_spec
        return folder_spec(data_path, in_channels)
    if data_name not in DATASETS:
        raise KeyError(f"unknown dataset {data_name!r}; valid names: {', '.join(data_names())}")
    return DATASETS[data_name]


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_DIGITS = ((0.1874,), (0.3270,))  # measured on the digits default training split
for _spec in (
    DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), hflip=False),
    DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    DatasetSpec("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                hflip=False),
    DatasetSpec("stl10", 10, 3, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713),
                input_size=224),
    DatasetSpec("mnin", 100, 3, 84, *_IMAGENET, input_size=224),
    DatasetSpec("digits", 10, 1, 32, *_DIGITS, hflip=False),
    DatasetSpec("decoy_digits", 10, 1, 32, *_DIGITS, hflip=False),
    DatasetSpec("decoy_mnist", 10, 1, 28, (0.1307,), (0.3081,), hflip=False),
    DatasetSpec("decoy_fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    # Fashion-MNIST on photographs (preprocessing/photo_backgrounds.py); measured on 1000
    # training images per class at correlation 0.95 (the photographs set the statistics)
    DatasetSpec("photo_fashion_mnist", 10, 3, 64, (0.5053, 0.4438, 0.4241),
                (0.2489, 0.2299, 0.2374)),
    DatasetSpec("photo_fashion_mnist96", 10, 3, 96, (0.5055, 0.4440, 0.4243),
                (0.2515, 0.2327, 0.2403)),
):
    register_dataset(_spec)
