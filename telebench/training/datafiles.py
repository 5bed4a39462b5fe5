"""Readers for the on-disk formats of the image datasets: IDX (MNIST family) and CIFAR-10's pickles.

Decoded arrays are cached per process, keyed on path, size and modification time, because every
trial of a suite loads the same 60k-image file and gunzipping it costs more than a short trial.
Cached tensors are shared: callers must index (copy) them, never modify them in place.
"""

from __future__ import annotations

import gzip
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from telebench.errors import UserError

# IDX type codes (http://yann.lecun.com/exdb/mnist/): the third byte of the magic number.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


def find_idx(folder: Path, stem: str) -> Path | None:
    """`folder/stem` or `folder/stem.gz`, whichever exists (uncompressed first)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def parse_idx(blob: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX byte string into an array of its declared type and shape (native byte order)."""
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in _IDX_DTYPES:
        raise UserError(f"{source} is not an IDX file (bad magic number); re-download or reinstall it.")
    ndim = blob[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[blob[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(blob) - header != expected:
        raise UserError(
            f"{source} is truncated or corrupt ({len(blob) - header} data bytes, {expected} expected for "
            f"shape {dims}); re-download or reinstall it."
        )
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


@lru_cache(maxsize=16)
def _read_idx_cached(path: str, size: int, mtime_ns: int) -> torch.Tensor:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            blob = handle.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} could not be read ({exc}); re-download or reinstall it.") from exc
    return torch.from_numpy(parse_idx(blob, path))


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzip or not) as a tensor, decoded once per process and file version."""
    return _read_idx_cached(*_stamp(path))


@lru_cache(maxsize=4)
def _read_cifar10_cached(stamps: tuple[tuple[str, int, int], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path, _, _ in stamps:
        try:
            with open(path, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")  # the official files are Python 2 pickles
            data = np.asarray(entry["data"], dtype=np.uint8)
            batch_labels = np.asarray(entry["labels"], dtype=np.int64)
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{path} is not a CIFAR-10 python batch ({exc}); re-download it with `download: true`."
            ) from exc
        if data.ndim != 2 or data.shape[1] != 3072 or len(batch_labels) != len(data):
            raise UserError(
                f"{path} holds data of shape {data.shape}, not N x 3072 images with N labels; re-download it."
            )
        images.append(data)
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def cifar10_missing(folder: Path) -> list[str]:
    """Names of the batch files absent from a `cifar-10-batches-py` folder."""
    return [name for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (folder / name).is_file()]


def read_cifar10(folder: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images as uint8 rows of 3072 values in channel-height-width order (the order
    torchvision's ToTensor would flatten to) and int64 labels."""
    names = CIFAR10_TRAIN_FILES if train else (CIFAR10_TEST_FILE,)
    return _read_cifar10_cached(tuple(_stamp(folder / name) for name in names))


def clear_caches() -> None:
    """Forget decoded files (tests, or a long-lived process that wants its memory back)."""
    _read_idx_cached.cache_clear()
    _read_cifar10_cached.cache_clear()
