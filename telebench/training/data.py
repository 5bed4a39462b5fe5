"""Datasets as whole tensors, a seeded batch stream over them, and the loss and evaluation helpers.

The datasets telebench trains on are small enough to live on the training device, so a step
slices a tensor with a seeded permutation instead of going through a DataLoader: the training
clock then measures training, not Python data plumbing (DESIGN §4). Arms of one seed build
their streams with the same seed and therefore see identical batches.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telebench.errors import UserError
from telebench.training import datafiles
from telebench.training.specs import DatasetSpec, Params, thaw

CLASSIFICATION = "classification"
REGRESSION = "regression"

SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
DEFAULT_DATA_ROOT = Path("~/.cache/telebench/data")  # torchvision root used when no root is given
MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ---- the loaded data ---------------------------------------------------------------------------
@dataclass
class DatasetBundle:
    """Train/validation(/test) tensors of one dataset. Inputs are float, flattened to n_features;
    labels are int64 class indices (classification) or float targets of n_outputs (regression)."""

    name: str
    task: str  # "classification" | "regression"
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor | None
    y_test: Tensor | None
    n_features: int
    n_outputs: int  # number of classes for classification

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DatasetBundle:
        """A copy on `device`; `dtype` recasts the float tensors (inputs, regression targets) only."""

        def move(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None)

        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_val=move(self.x_val),
            y_val=move(self.y_val),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
        )


# ---- dataset parameters ------------------------------------------------------------------------
_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Param:
    """One dataset option: its default, type and allowed range, for validation and `telebench list`."""

    default: Any
    kind: type
    minimum: float | None = None  # inclusive
    below: float | None = None  # exclusive upper bound
    choices: tuple[str, ...] | None = None
    optional: bool = False  # None allowed

    def check(self, dataset: str, key: str, value: Any) -> Any:
        where = f"dataset {dataset!r} parameter {key!r}"
        if value is None and self.optional:
            return None
        ok_type = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok_type = float(value), True
        if not ok_type:
            wanted = _KIND_WORDS.get(self.kind, self.kind.__name__)
            raise UserError(f"{where} must be {wanted}, got {value!r}; fix it in the case's dataset params.")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{where} is {value!r}; use one of {', '.join(self.choices)}.")
        if self.minimum is not None and value < self.minimum:
            raise UserError(f"{where} must be at least {self.minimum}, got {value!r}.")
        if self.below is not None and value >= self.below:
            raise UserError(f"{where} must be below {self.below}, got {value!r}.")
        return value


def _count(default: int, minimum: int = 1) -> Param:
    return Param(default, int, minimum=minimum)


_SEED = Param(0, int, minimum=0)
_ROOT = Param(None, str, optional=True)
_DOWNLOAD = Param(False, bool)


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """A registry entry: what a dataset is, which params it takes, and how to load it.
    `shape` and `sizes` answer from the params alone, so a suite is validated without loading data."""

    name: str
    task: str
    description: str
    params: Mapping[str, Param]
    shape: Callable[[dict[str, Any]], tuple[int, int]]  # resolved params -> (n_features, n_outputs)
    sizes: Callable[[dict[str, Any]], tuple[int, int, int]]  # resolved params -> (n_train, n_val, n_test)
    loader: Callable[[dict[str, Any], str | None], DatasetBundle]

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: param.default for key, param in self.params.items()}

    def resolve(self, params: Mapping[str, Any] | Params | None = None) -> dict[str, Any]:
        """Defaults overlaid with `params`, each checked; an unknown key names the allowed ones."""
        given = thaw(params) if isinstance(params, tuple) else dict(params or {})
        for key in given:
            if key not in self.params:
                near = difflib.get_close_matches(key, list(self.params), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise UserError(
                    f"dataset {self.name!r} has no parameter {key!r}{hint}; allowed: {', '.join(self.params)}."
                )
        resolved = {
            key: param.check(self.name, key, given.get(key, param.default))
            for key, param in self.params.items()
        }
        self.sizes(resolved)  # cross-parameter checks (e.g. n_train + n_val fits the file)
        return resolved

    def n_features(self, params: Mapping[str, Any] | Params | None = None) -> int:
        return self.shape(self.resolve(params))[0]

    def n_outputs(self, params: Mapping[str, Any] | Params | None = None) -> int:
        return self.shape(self.resolve(params))[1]


# ---- helpers shared by the loaders -------------------------------------------------------------
def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator per (seed, purpose), so changing one size never reshuffles another part."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def _teacher(
    n_features: int, n_outputs: int, generator: torch.Generator, hidden: int = 32
) -> Callable[[Tensor], Tensor]:
    """A random one-hidden-layer tanh network: a smooth, learnable, not-linear target."""
    first = torch.randn(n_features, hidden, generator=generator) * (1.5 / math.sqrt(n_features))
    shift = torch.randn(hidden, generator=generator) * 0.5
    second = torch.randn(hidden, n_outputs, generator=generator) / math.sqrt(hidden)
    return lambda x: torch.tanh(x @ first + shift) @ second


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


def _pool_sizes(name: str, pool: int, test_pool: int) -> Callable[[dict[str, Any]], tuple[int, int, int]]:
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


def _root(p: dict[str, Any], data_root: str | None) -> Path:
    """--data-root beats the suite's `root` param, which beats the default cache folder."""
    return Path(data_root or p["root"] or DEFAULT_DATA_ROOT).expanduser()


def _download_failed(name: str, root: Path, exc: Exception) -> UserError:
    return UserError(
        f"downloading {name} into {root} failed ({exc}); check the network, or copy the files there and "
        "pass `--data-root DIR`."
    )


# ---- loaders -----------------------------------------------------------------------------------
def _load_synthetic_regression(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """Inputs uniform on [0, 1) as in the NeurIPS-2022 paper's MLP experiments. Targets are either
    a random teacher network's outputs (standardised) plus Gaussian noise, so the loss can fall to
    about noise², or, with `targets: uniform`, the paper's i.i.d. uniform targets."""
    f, o = p["n_features"], p["n_outputs"]
    teacher = _teacher(f, o, _generator(p["seed"], 0))
    reference = torch.rand(4096, f, generator=_generator(p["seed"], 1)) - 0.5
    ref_out = teacher(reference)
    mean, std = ref_out.mean(0), ref_out.std(0).clamp_min(1e-6)

    def part(n: int, stream: int) -> tuple[Tensor, Tensor]:
        g = _generator(p["seed"], stream)
        x = torch.rand(n, f, generator=g)
        if p["targets"] == "uniform":
            return x, torch.rand(n, o, generator=g)
        y = (teacher(x - 0.5) - mean) / std + p["noise"] * torch.randn(n, o, generator=g)
        return x, y

    x_train, y_train = part(p["n_train"], 2)
    x_val, y_val = part(p["n_val"], 3)
    return DatasetBundle("synthetic-regression", REGRESSION, x_train, y_train, x_val, y_val, None, None, f, o)


def _load_synthetic_classification(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """Gaussian inputs labelled by the argmax of a random teacher network; the teacher's logits are
    centred on a reference sample so that the classes come out roughly balanced."""
    f, c = p["n_features"], p["n_classes"]
    teacher = _teacher(f, c, _generator(p["seed"], 0))
    centre = teacher(torch.randn(4096, f, generator=_generator(p["seed"], 1))).mean(0)

    def part(n: int, stream: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, f, generator=_generator(p["seed"], stream))
        return x, (teacher(x) - centre).argmax(1)

    x_train, y_train = part(p["n_train"], 2)
    x_val, y_val = part(p["n_val"], 3)
    return DatasetBundle(
        "synthetic-classification", CLASSIFICATION, x_train, y_train, x_val, y_val, None, None, f, c
    )


_DIGITS_TOTAL = 1797  # sklearn.datasets.load_digits


def _digits_sizes(p: dict[str, Any]) -> tuple[int, int, int]:
    n_val = round(p["val_fraction"] * _DIGITS_TOTAL)
    n_test = round(p["test_fraction"] * _DIGITS_TOTAL)
    n_train = _DIGITS_TOTAL - n_val - n_test
    if n_val < 1 or n_train < 1:
        raise UserError(
            f"digits val_fraction {p['val_fraction']} and test_fraction {p['test_fraction']} leave "
            f"{n_train} training and {n_val} validation images; keep both fractions small enough that each is ≥ 1."
        )
    return n_train, n_val, n_test


def _load_digits(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
    """scikit-learn's bundled 8x8 handwritten digits (real data, no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    x = torch.as_tensor(images, dtype=torch.float32) / 16.0
    y = torch.as_tensor(labels, dtype=torch.int64)
    n_train, n_val, n_test = _digits_sizes(p)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(p["split_seed"]))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    x_test, y_test = (x[test], y[test]) if n_test else (None, None)
    return DatasetBundle("digits", CLASSIFICATION, x[train], y[train], x[val], y[val], x_test, y_test, 64, 10)


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
    return DatasetBundle(name, CLASSIFICATION, x_train, y_train, x_val, y_val, x_test, y_test, 784, 10)


def _load_fashion_mnist(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
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


def _load_mnist(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
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
    return DatasetBundle("mnist", CLASSIFICATION, x_train, y_train, x_val, y_val, x_test, y_test, 784, 10)


def _load_cifar10(p: dict[str, Any], data_root: str | None) -> DatasetBundle:
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
    return DatasetBundle("cifar10", CLASSIFICATION, x_train, y_train, x_val, y_val, x_test, y_test, 3072, 10)


def _image_params(n_train: int, n_val: int, n_test: int) -> dict[str, Param]:
    return {
        "n_train": _count(n_train),
        "n_val": _count(n_val),
        "n_test": _count(n_test, minimum=0),
        "split_seed": Param(1, int, minimum=0),
        "root": _ROOT,
        "download": _DOWNLOAD,
    }


def _fixed_shape(n_features: int, n_outputs: int) -> Callable[[dict[str, Any]], tuple[int, int]]:
    return lambda p: (n_features, n_outputs)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "synthetic-regression",
            REGRESSION,
            "uniform [0,1) inputs; random-teacher (or uniform) targets",
            {
                "n_train": _count(1024),
                "n_val": _count(256),
                "n_features": _count(16),
                "n_outputs": _count(4),
                "noise": Param(0.1, float, minimum=0.0),
                "targets": Param("teacher", str, choices=("teacher", "uniform")),
                "seed": _SEED,
            },
            lambda p: (p["n_features"], p["n_outputs"]),
            lambda p: (p["n_train"], p["n_val"], 0),
            _load_synthetic_regression,
        ),
        DatasetInfo(
            "synthetic-classification",
            CLASSIFICATION,
            "Gaussian inputs labelled by a random teacher network",
            {
                "n_train": _count(2048),
                "n_val": _count(512),
                "n_features": _count(20),
                "n_classes": _count(5, minimum=2),
                "seed": _SEED,
            },
            lambda p: (p["n_features"], p["n_classes"]),
            lambda p: (p["n_train"], p["n_val"], 0),
            _load_synthetic_classification,
        ),
        DatasetInfo(
            "digits",
            CLASSIFICATION,
            "scikit-learn's bundled 8x8 handwritten digits (1797 images)",
            {
                "val_fraction": Param(0.2, float, minimum=0.0, below=1.0),
                "test_fraction": Param(0.1, float, minimum=0.0, below=1.0),
                "split_seed": _SEED,
            },
            _fixed_shape(64, 10),
            _digits_sizes,
            _load_digits,
        ),
        DatasetInfo(
            "fashion-mnist",
            CLASSIFICATION,
            "Fashion-MNIST 28x28 (Debian dataset-fashion-mnist or a torchvision root)",
            _image_params(50_000, 10_000, 10_000),
            _fixed_shape(784, 10),
            _pool_sizes("fashion-mnist", 60_000, 10_000),
            _load_fashion_mnist,
        ),
        DatasetInfo(
            "mnist",
            CLASSIFICATION,
            "MNIST 28x28 from a torchvision root",
            _image_params(50_000, 10_000, 10_000),
            _fixed_shape(784, 10),
            _pool_sizes("mnist", 60_000, 10_000),
            _load_mnist,
        ),
        DatasetInfo(
            "cifar10",
            CLASSIFICATION,
            "CIFAR-10 32x32x3 from a torchvision root, flattened",
            _image_params(45_000, 5_000, 10_000),
            _fixed_shape(3072, 10),
            _pool_sizes("cifar10", 50_000, 10_000),
            _load_cifar10,
        ),
    )
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`, or a UserError that suggests the nearest name."""
    info = DATASETS.get(name)
    if info is None:
        near = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(f"dataset {name!r} is unknown{hint}; use one of {', '.join(DATASETS)}.")
    return info


def dataset_shape(name: str, params: Mapping[str, Any] | Params | None = None) -> tuple[int, int]:
    """(n_features, n_outputs) from the params alone, without loading, for suite validation."""
    info = dataset_info(name)
    return info.shape(info.resolve(params))


def dataset_sizes(name: str, params: Mapping[str, Any] | Params | None = None) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) from the params alone, e.g. to reject a teleport batch larger than the data."""
    info = dataset_info(name)
    return info.sizes(info.resolve(params))


def load_dataset(spec: DatasetSpec, data_root: str | None = None) -> DatasetBundle:
    """Load `spec` on the CPU (call `.to(device)` after). Missing files raise a UserError naming the fix."""
    info = dataset_info(spec.name)
    return info.loader(info.resolve(spec.params), data_root)


# ---- batches -----------------------------------------------------------------------------------
class BatchStream:
    """Minibatches of (x, y) in a seeded order that is reshuffled every epoch; the last partial
    batch is dropped so every step has the same size. Indices are drawn on the CPU and moved,
    so one seed gives the same batches on every device."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1 or batch_size > len(x):
            raise UserError(
                f"batch size {batch_size} must be between 1 and the {len(x)} training examples; change batch_size."
            )
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.steps_per_epoch = len(x) // batch_size
        self.epoch = 0  # epoch of the next batch
        self.index_in_epoch = 0  # position of the next batch within its epoch
        self._generator = torch.Generator().manual_seed(seed)
        self._order = self._shuffle()

    def _shuffle(self) -> Tensor:
        return torch.randperm(len(self.x), generator=self._generator).to(self.x.device)

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch; crossing an epoch boundary reshuffles deterministically."""
        start = self.index_in_epoch * self.batch_size
        rows = self._order[start : start + self.batch_size]
        batch = self.x.index_select(0, rows), self.y.index_select(0, rows)
        self.index_in_epoch += 1
        if self.index_in_epoch == self.steps_per_epoch:
            self.epoch += 1
            self.index_in_epoch = 0
            self._order = self._shuffle()
        return batch


# ---- losses and evaluation ---------------------------------------------------------------------
def loss_fn_for(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean cross-entropy for classification, mean squared error for regression."""
    if task == CLASSIFICATION:
        return F.cross_entropy
    if task == REGRESSION:
        return F.mse_loss
    raise ValueError(f"unknown task {task!r}; expected {CLASSIFICATION!r} or {REGRESSION!r}")


def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, task: str, batch_size: int = 4096
) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) over all of x, in batches, without gradients. Sums stay on the
    device until the end, so there is one host synchronisation per call, not one per batch."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    loss_fn = loss_fn_for(task)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                out = model(xb)
                loss_sum += loss_fn(out, yb, reduction="sum").double()
                if task == CLASSIFICATION:
                    correct += (out.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    total_loss, total_correct = torch.stack([loss_sum, correct.double()]).tolist()  # the one sync
    if task == CLASSIFICATION:
        return total_loss / len(y), total_correct / len(y)
    return total_loss / y.numel(), None  # MSE averages over every output, as loss_fn does
