"""Atomic file writes and safe checkpoint loading.

Every file this project writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the destination folder, are flushed to disk, and the temporary file is
renamed over the destination. A killed run therefore leaves either the old file or the new
one, never half of one.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_save(obj, path: str | os.PathLike, saver: Callable | None = None) -> None:
    """``torch.save`` (or another ``saver(obj, file)``) to ``path`` atomically."""
    if saver is None:
        import torch
        saver = torch.save
    with atomic_write(path, "wb") as f:
        saver(obj, f)


def load_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True`` (nothing but tensors and plain containers
    is ever unpickled).

    Raises FileNotFoundError if it is missing, and a ValueError naming the file if it is not
    a valid checkpoint: garbage, truncated, or holding other Python objects.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False; a weights file never needs it
        reason = ("it holds Python objects other than tensors and plain containers"
                  if "Weights only load failed" in str(e) else "its contents cannot be read")
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, IndexError, TypeError,
            zipfile.BadZipFile) as e:
        reason = f"garbage or truncated ({type(e).__name__})"
    raise ValueError(f"{path} is not a valid checkpoint (a torch.save file of weights): "
                     f"{reason}") from None


def safe_child(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, refusing any path that would leave ``root``."""
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"refusing to write outside {root}: {relative!r}")
    return target


def refuse_overlap(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None],
                   flag: str) -> None:
    """Refuse an output folder that is, lies inside, or contains one of the ``inputs``.

    ``inputs`` maps each input flag (e.g. ``"--data_path"``) to its path (``None``: not
    given); ``flag`` names the output folder's flag. Writing there could replace or delete
    input files (a copy over its own source, a mask over its image) or mix outputs into
    the data a later step reads. Raises a ValueError naming both flags and paths.
    """
    out = Path(output).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if out == source:
            how = "is"
        elif source in out.parents:
            how = "lies inside"
        elif out in source.parents:
            how = "contains"
        else:
            continue
        raise ValueError(f"{flag} {output} {how} the input {name} {path}: outputs must not "
                         f"overlap inputs (they could overwrite or delete them); choose "
                         f"another {flag}")
