"""utils (atomic files, devices, seeding) and metrics against hand-computed values."""
import numpy as np
import re

import pytest
import torch

from metrics import ConfusionMeter, confusion_matrix, per_class_accuracy, topk_accuracy
from utils import atomic_save, atomic_write_text, get_device, load_checkpoint, safe_child


class Arbitrary:
    """Any pickled object that is not a tensor or plain container."""


def test_topk_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
    labels = torch.tensor([2, 0, 0, 1])
    # top-1 hits: no, yes, no, yes; top-2 hits: yes, yes, no(0 is last), yes
    assert topk_accuracy(logits, labels, (1, 2)) == [0.5, 0.75]
    assert topk_accuracy(logits, labels, (5,)) == [1.0]     # k larger than classes


def test_confusion_and_per_class_by_hand():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    acc = per_class_accuracy(cm)
    np.testing.assert_allclose(acc[:3], [0.5, 1.0, 2 / 3])
    assert np.isnan(acc[3])
    meter = ConfusionMeter(4)
    meter.update(torch.eye(4)[[0, 1, 1, 2, 0, 2]] * 5, torch.tensor([0, 0, 1, 2, 2, 2]), loss=1.0)
    np.testing.assert_array_equal(meter.cm, cm)
    assert meter.top1 == pytest.approx(4 / 6) and meter.loss == 1.0


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"a": torch.ones(2)}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.zeros(2)}, path, saver=broken)
    assert load_checkpoint(path)["a"].tolist() == [1.0, 1.0]     # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]
    with pytest.raises(OSError):
        atomic_save({}, tmp_path / "new.pth", saver=broken)
    assert not (tmp_path / "new.pth").exists()


UNSAFE_ADVICE = ("weights_only", "allow_pickle", "pickle.load", "trust")


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"x": Arbitrary()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError,
                       match=r"evil\.pth is not a valid checkpoint.*Python objects") as e:
        load_checkpoint(tmp_path / "evil.pth")
    assert not any(advice in str(e.value) for advice in UNSAFE_ADVICE)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_checkpoints_name_the_file(tmp_path):
    """Garbage, empty, truncated or foreign files: a ValueError naming the file that does
    not advise loading it unsafely."""
    import pickle
    import numpy as np
    from utils import load_weights
    import models
    good = tmp_path / "good.pth"
    torch.save({"model": models.load_model("smallcnn", 1, 3).state_dict()}, good)
    data = good.read_bytes()
    bad = {"garbage.pth": b"this is not a checkpoint\n" * 20, "empty.pth": b""}
    bad.update({f"cut{k}.pth": data[:len(data) * k // 10] for k in (1, 5, 9)})
    bad["cut_last_byte.pth"] = data[:-1]
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    with open(tmp_path / "stats_as.pth", "wb") as f:
        np.savez(f, a=np.arange(3))
    with open(tmp_path / "pickled.pth", "wb") as f:
        pickle.dump({"model": {"w": [1, 2]}}, f)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    for name in [*bad, "stats_as.pth", "pickled.pth", "tensor.pth"]:
        with pytest.raises(ValueError, match=rf"{re.escape(name)} is not a valid checkpoint") as e:
            load_weights(models.load_model("smallcnn", 1, 3), tmp_path / name, "smallcnn")
        assert not any(advice in str(e.value) for advice in UNSAFE_ADVICE), str(e.value)
        assert e.value.__cause__ is None       # no chained reader message with its advice
        assert e.value.__context__ is None or e.value.__suppress_context__


def test_safe_child(tmp_path):
    assert safe_child(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    with pytest.raises(ValueError, match="outside"):
        safe_child(tmp_path, "../x.png")
    atomic_write_text(tmp_path / "t.txt", "hi")
    assert (tmp_path / "t.txt").read_text() == "hi"


def test_device_choice():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        assert get_device("auto", device_index="0") == torch.device("cpu")   # released flag
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda:0")
