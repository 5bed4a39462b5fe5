"""Loaders for the real image datasets: scikit-learn's digits, Fashion-MNIST, MNIST and CIFAR-10.

Each finds its files (or downloads them when asked), carves train and validation sets from the
training pool with a seeded permutation, and returns pixels as float rows in [0, 1]. A missing
or too-small file raises a UserError that names the fix, since a suite author hits these first.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from telebench.errors import UserError
from telebench.training import datafiles
from telebench.training.dataset_bundle import CLASSIFICATION, DatasetBundle

SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
DEFAULT_DATA_ROOT = Path("~/.cache/telebench/data")  # torchvision root used when no root is given
MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DIGITS_TOTAL = 1797  # sklearn.datasets.load_digits


# ---- splits and sizes --------------------------------------------------------------------------
def _carve(
    source: str, images: Tensor, labels: Tensor, n_train: int, n_val: int, split_seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and validation sets from one labelled pool. The permutation is the one
    torch.utils.data.random_split draws, so 50k + 10k with seed 1 is the paper's split; validation
    is taken from the end, so shrinking n_train keeps the same validation set."""
    if n_train + n_val > len(images):
        raise UserError(
            f"{source} holds only {len(images)} training images, fewer than n_train {n_train} + n_val {n_val}; "
            "lower them or replace the files."
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(split_seed))
    train, val = order[:n_train], order[len(images) - n_val :]
    return _pixels(images[train]), labels[train].long(), _pixels(images[val]), labels[val].long()


def _pixels(images: Tensor) -> Tensor:
    """uint8 images -> float32 rows in [0, 1]."""
    return images.reshape(len(images), -1).to(torch.float32) / 255.0


def _test_part(
    source: str, images: Tensor, labels: Tensor, n_test: int
) -> tuple[Tensor | None, Tensor | None]:
    if n_test == 0:
        return None, None
    if n_test > len(images):
        raise UserError(
            f"{source} holds only {len(images)} test images, fewer than n_test {n_test}; lower n_test."
        )
    return _pixels(images[:n_test]), labels[:n_test].long()


def pool_sizes(name: str, pool: int, test_pool: int) -> Callable[[dict[str, Any]], tuple[int, int, int]]:
    """The sizes rule of a dataset whose files hold `pool` training and `test_pool` test images."""

    def sizes(p: dict[str, Any]) -> tuple[int, int, int]:
        if p["n_train"] + p["n_val"] > pool:
            raise UserError(
                f"dataset {name!r} n_train {p['n_train']} + n_val {p['n_val']} exceed its {pool} training images; "
                "lower one of them."
            )
        if p["n_test"] > test_pool:
            raise UserError(
                f"dataset {name!r} n_test {p['n_test']} exceeds its {test_pool} test images; use at most {test_pool}."
            )
        return p["n_train"], p["n_val"], p["n_test"]

    return sizes


def digits_sizes(p: dict[str, Any]) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) of the digits split, which is given as fractions of its 1797 images."""
    n_val = round(p["val_fraction"] * DIGITS_TOTAL)
    n_test = round(p["test_fraction"] * DIGITS_TOTAL)
    n_train = DIGITS_TOTAL - n_val - n_test
    if n_val < 1 or n_train < 1:
        raise UserError(
            f"digits val_fraction {p['val_fraction']} and test_fraction {p['test_fraction']} leave "
            f"{n_train} training and {n_val} validation images; keep both fractions small enough that each is ≥ 1."
        )
    return n_train, n_val, n_test


# ---- finding the files -------------------------------------------------------------------------
def _root(p: dict[str, Any], data_root: str | None) -> Path:
    """--data-root beats the suite's `root` param, which beats the default cache folder."""
    return Path(data_root or p["root"] or DEFAULT_DATA_ROOT).expanduser()


def _download_failed(name: str, root: Path, exc: Exception) -> UserError:
    return UserError(
        f"downloading {name} into {root} failed ({exc}); check the network, or copy the files there and "
        "pass `--data-root DIR`."
    )


def _idx_set(folder: Path) -> dict[str, Path] | None:
    """The four MNIST-layout files in `folder` (each gzipped or not), or None if any is missing."""
    found = {stem: datafiles.find_idx(folder, stem) for stem in MNIST_STEMS}
    return None if any(path is None for path in found.values()) else found  # type: ignore[return-value]


def _mnist_like(name: str, files: Mapping[str, Path], p: dict[str, Any]) -> DatasetBundle:
    train_x, train_y = (datafiles.read_idx(files[s]) for s in MNIST_STEMS[:2])
    test_x, test_y = (datafiles.read_idx(files[s]) for s in MNIST_STEMS[2:])
    if train_x.ndim != 3 or len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise UserError(
            f"{files[MNIST_STEMS[0]].parent} holds mismatched image and label files; reinstall them."
        )
    source = str(files[MNIST_STEMS[0]].parent)
    x_train, y_train, x_val, y_val = _carve(
        source, train_x, train_y, p["n_train"], p["n_val"], p["split_seed"]
    )
    x_test, y_test = _test_part(source, test_x, test_y, p["n_test"])
    return DatasetBundle(name, CLASSIFICATION, x_train, y_train, x_val, y_val, x_test, y_test, 784, 10,
                         image_shape=(1, 28, 28))


# ---- loaders -----------------------------------------------------------------------------------
def digits_file() -> Path | None:
    """scikit-learn's bundled digits file (sklearn/datasets/data/digits.csv.gz), found without importing
    scikit-learn, whose import alone takes seconds; None when scikit-learn or the file is not there."""
    spec = importlib.util.find_spec("sklearn")  # a top-level name: located, not imported
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def read_digits_csv(path: Path) -> tuple[Tensor, Tensor]:
    """(pixels as float32 rows in [0, 1], int64 labels) from the digits file: 1797 rows of 64 pixel counts
    0..16 and the label. Small integers, so the pixels are bit for bit those of sklearn's load_digits / 16."""
    rows = [[int(v) for v in line.split(",")] for line in gzip.decompress(path.read_bytes()).decode().splitlines()
            if line.strip()]
    table = torch.tensor(rows, dtype=torch.int64)
    if table.shape != (DIGITS_TOTAL, 65):
        raise ValueError(f"{path} holds a {tuple(table.shape)} table, not the {DIGITS_TOTAL} x 65 of the digits")
    return table[:, :-1].to(torch.float32) / 16.0, table[:, -1].contiguous()


def read_digits_sklearn() -> tuple[Tensor, Tensor]:
    """The same (pixels, labels) through sklearn.datasets.load_digits: the fallback when the file is not found."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    return torch.as_tensor(images, dtype=torch.float32) / 16.0, torch.as_tensor(labels, dtype=torch.int64)


@functools.cache
def _digits_pool() -> tuple[Tensor, Tensor]:
    """Read once per process (every pair of a suite loads it); callers index it, which copies."""
    path = digits_file()
    if path is not None:
        try:
            return read_digits_csv(path)
        except (OSError, ValueError, EOFError):  # a scikit-learn whose file changed form: its own loader reads it
            pass
    return read_digits_sklearn()


def load_sklearn_digits(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """scikit-learn's bundled 8x8 handwritten digits (real data, no download), scaled to [0, 1]."""
    x, y = _digits_pool()
    n_train, n_val, n_test = digits_sizes(p)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(p["split_seed"]))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    x_test, y_test = (x[test], y[test]) if n_test else (None, None)
    return DatasetBundle("digits", CLASSIFICATION, x[train], y[train], x[val], y[val], x_test, y_test, 64, 10,
                         image_shape=(1, 8, 8))


def load_fashion_mnist(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """IDX files parsed here (gzip or not), from a torchvision root's FashionMNIST/raw, the root
    folder itself, or Debian's /usr/share/datasets/fashion-mnist, whichever has all four first."""
    root = _root(p, data_root)
    folders = [root / "FashionMNIST" / "raw", root, SYSTEM_FASHION_MNIST_DIR]
    for folder in folders:
        files = _idx_set(folder)
        if files is not None:
            return _mnist_like("fashion-mnist", files, p)
    if p["download"]:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(root), train=True, download=True)
        except (OSError, RuntimeError) as exc:
            raise _download_failed("Fashion-MNIST", root, exc) from exc
        files = _idx_set(root / "FashionMNIST" / "raw")
        if files is not None:
            return _mnist_like("fashion-mnist", files, p)
    raise UserError(
        f"Fashion-MNIST files ({MNIST_STEMS[0]}[.gz] and the other three) were not found in "
        f"{', '.join(str(f) for f in folders)}; install them with `apt-get install dataset-fashion-mnist`, "
        "pass `--data-root DIR` for a torchvision root holding FashionMNIST/raw, or set `download: true`."
    )


def load_mnist(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """MNIST through torchvision.datasets.MNIST, which reads the uncompressed files in <root>/MNIST/raw."""
    from torchvision.datasets import MNIST

    root = _root(p, data_root)
    raw = root / "MNIST" / "raw"
    if not p["download"] and not all((raw / stem).is_file() for stem in MNIST_STEMS):
        gzipped = all((raw / f"{stem}.gz").is_file() for stem in MNIST_STEMS)
        fix = (
            "set `download: true` (it unpacks the .gz files there without a network) or gunzip them"
            if gzipped
            else "pass `--data-root DIR` for a torchvision root holding MNIST/raw, or set `download: true`"
        )
        raise UserError(f"MNIST files ({', '.join(MNIST_STEMS)}) were not found in {raw}; {fix}.")
    try:
        train = MNIST(str(root), train=True, download=p["download"])
        test = MNIST(str(root), train=False, download=False)
    except (OSError, RuntimeError) as exc:
        raise _download_failed("MNIST", root, exc) from exc
    x_train, y_train, x_val, y_val = _carve(
        str(raw), train.data, train.targets, p["n_train"], p["n_val"], p["split_seed"]
    )
    x_test, y_test = _test_part(str(raw), test.data, test.targets, p["n_test"])
    return DatasetBundle("mnist", CLASSIFICATION, x_train, y_train, x_val, y_val, x_test, y_test, 784, 10,
                         image_shape=(1, 28, 28))


def load_cifar10(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """CIFAR-10's python batches in <root>/cifar-10-batches-py, flattened to 3072 values per image.
    torchvision.datasets.CIFAR10 does the download (and its checksum); the batches are read here,
    because torchvision's loader insists on the official files' MD5 sums."""
    root = _root(p, data_root)
    folder = root / datafiles.CIFAR10_FOLDER
    if p["download"] and datafiles.cifar10_missing(folder):
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(root), train=True, download=True)
        except (OSError, RuntimeError) as exc:
            raise _download_failed("CIFAR-10", root, exc) from exc
    missing = datafiles.cifar10_missing(folder)
    if missing:
        raise UserError(
            f"CIFAR-10 files ({', '.join(missing)}) were not found in {folder}; pass `--data-root DIR` for a "
            "torchvision root holding cifar-10-batches-py, or set `download: true`."
        )
    train_x, train_y = datafiles.read_cifar10(folder, train=True)
    test_x, test_y = datafiles.read_cifar10(folder, train=False)
    x_train, y_train, x_val, y_val = _carve(
        str(folder), train_x, train_y, p["n_train"], p["n_val"], p["split_seed"]
    )
    x_test, y_test = _test_part(str(folder), test_x, test_y, p["n_test"])
    return DatasetBundle("cifar10", CLASSIFICATION, x_train, y_train, x_val, y_val, x_test, y_test, 3072, 10,
                         image_shape=(3, 32, 32))  # the batches store each image channel by channel
