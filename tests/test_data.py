"""Dataset registry, file loaders (on tiny files written here), BatchStream and evaluation."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from telebench.errors import UserError
from telebench.training import datafiles, datasets, image_datasets
from telebench.training.batches import BatchStream
from telebench.training.datasets import dataset_names, dataset_shape, dataset_sizes, load_dataset
from telebench.training.evaluation import evaluate, loss_fn_for
from telebench.training.specs import DatasetSpec, freeze

# ---- helpers that write the real on-disk formats ------------------------------------------------
_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    array = np.ascontiguousarray(array)
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, _IDX_CODES[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + big.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(blob)
    else:
        path.write_bytes(blob)


def write_mnist_layout(folder: Path, gz: bool, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / stem, array, gz)
    return arrays


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A tiny cifar-10-batches-py folder in the official python-pickle layout."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batch = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch_labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": batch, "labels": batch_labels, "batch_label": name}, handle)
        images.append(batch)
        labels.append(np.array(batch_labels))
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, handle)
    return np.concatenate(images), np.concatenate(labels)


def carve_order(pool: int, split_seed: int) -> torch.Tensor:
    return torch.randperm(pool, generator=torch.Generator().manual_seed(split_seed))


@pytest.fixture(autouse=True)
def no_system_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the Debian folder elsewhere, so tests behave the same whether the package is installed or not."""
    monkeypatch.setattr(image_datasets, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-system-dir")
    monkeypatch.setattr(image_datasets, "DEFAULT_DATA_ROOT", tmp_path / "no-default-root")


# ---- IDX parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["u1", ">i4", ">f4"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, dtype: str, gz: bool) -> None:
    array = (
        (np.arange(24).reshape(2, 3, 4) * 7 - 20).astype(dtype)
        if dtype != "u1"
        else np.arange(24, dtype="u1")
    )
    write_idx(tmp_path / "file", array, gz)
    path = datafiles.find_idx(tmp_path, "file")
    assert path is not None and path.name == ("file.gz" if gz else "file")
    decoded = datafiles.read_idx(path).numpy()
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array.astype(np.dtype(dtype).newbyteorder("=")))


def test_corrupt_idx_is_a_user_error(tmp_path: Path) -> None:
    write_idx(tmp_path / "file", np.zeros((4, 5), dtype="u1"), gz=False)
    blob = (tmp_path / "file").read_bytes()
    (tmp_path / "file").write_bytes(blob[:-3])
    with pytest.raises(UserError, match="truncated or corrupt"):
        datafiles.read_idx(tmp_path / "file")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(UserError, match="not an IDX file"):
        datafiles.read_idx(tmp_path / "junk")


def test_idx_cache_reuses_decoded_file_and_notices_changes(tmp_path: Path) -> None:
    path = tmp_path / "file"
    write_idx(path, np.full(10, 3, dtype="u1"), gz=False)
    first = datafiles.read_idx(path)
    hits = datafiles._read_idx_cached.cache_info().hits
    assert datafiles.read_idx(path) is first
    assert datafiles._read_idx_cached.cache_info().hits == hits + 1
    write_idx(path, np.full(12, 5, dtype="u1"), gz=False)  # new size: a new cache key
    assert datafiles.read_idx(path).tolist() == [5] * 12


# ---- fashion-mnist, mnist, cifar10 from files ---------------------------------------------------
FASHION_PARAMS = {"n_train": 40, "n_val": 10, "n_test": 5}


@pytest.mark.parametrize("layout", ["torchvision-gz", "flat-raw"])
def test_fashion_mnist_loads_and_carves_validation(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "root"
    folder = root / "FashionMNIST" / "raw" if layout == "torchvision-gz" else root
    arrays = write_mnist_layout(folder, gz=layout == "torchvision-gz")
    bundle = load_dataset(DatasetSpec("fashion-mnist", freeze(FASHION_PARAMS)), data_root=str(root))

    assert (bundle.task, bundle.n_features, bundle.n_outputs) == ("classification", 784, 10)
    assert (
        bundle.x_train.shape == (40, 784)
        and bundle.x_val.shape == (10, 784)
        and bundle.x_test.shape == (5, 784)
    )
    assert bundle.x_train.dtype == torch.float32 and bundle.y_train.dtype == torch.int64
    order = carve_order(60, split_seed=1)
    images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).reshape(60, 784).float() / 255
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long()
    torch.testing.assert_close(bundle.x_train, images[order[:40]], rtol=0, atol=0)
    torch.testing.assert_close(bundle.y_val, labels[order[-10:]], rtol=0, atol=0)
    assert set(order[:40].tolist()).isdisjoint(order[-10:].tolist())
    test_images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:5]).reshape(5, 784).float() / 255
    torch.testing.assert_close(bundle.x_test, test_images, rtol=0, atol=0)


def test_fashion_mnist_validation_set_does_not_depend_on_n_train(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path / "FashionMNIST" / "raw", gz=True)
    small = load_dataset(
        DatasetSpec("fashion-mnist", freeze({"n_train": 10, "n_val": 10, "n_test": 20})), str(tmp_path)
    )
    large = load_dataset(
        DatasetSpec("fashion-mnist", freeze({"n_train": 50, "n_val": 10, "n_test": 1})), str(tmp_path)
    )
    assert torch.equal(small.x_val, large.x_val)
    assert torch.equal(small.x_train, large.x_train[:10])
    assert torch.equal(small.x_test[:1], large.x_test)


def test_files_smaller_than_the_requested_split_are_user_errors(tmp_path: Path) -> None:
    write_mnist_layout(tmp_path / "FashionMNIST" / "raw", gz=True)  # 60 training and 20 test images
    with pytest.raises(UserError, match=r"holds only 60 training images, fewer than n_train 55 \+ n_val 10"):
        load_dataset(DatasetSpec("fashion-mnist", freeze({"n_train": 55, "n_val": 10})), str(tmp_path))
    with pytest.raises(UserError, match=r"holds only 20 test images, fewer than n_test 10000"):
        load_dataset(DatasetSpec("fashion-mnist", freeze({"n_train": 5, "n_val": 5})), str(tmp_path))


def test_fashion_mnist_from_the_debian_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_layout(tmp_path / "debian", gz=True)
    monkeypatch.setattr(image_datasets, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "debian")
    bundle = load_dataset(DatasetSpec("fashion-mnist", freeze({**FASHION_PARAMS, "n_test": 0})))
    assert bundle.x_train.shape == (40, 784) and bundle.x_test is None and bundle.y_test is None


def test_missing_fashion_mnist_names_every_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_dataset(DatasetSpec("fashion-mnist"), data_root=str(tmp_path / "empty"))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-root" in message and "download: true" in message
    assert str(tmp_path / "empty") in message


def test_mnist_through_torchvision(tmp_path: Path) -> None:
    arrays = write_mnist_layout(tmp_path / "MNIST" / "raw", gz=False, seed=3)
    spec = DatasetSpec("mnist", freeze({"n_train": 30, "n_val": 20, "n_test": 7, "split_seed": 5}))
    bundle = load_dataset(spec, data_root=str(tmp_path))
    order = carve_order(60, split_seed=5)
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long()
    assert torch.equal(bundle.y_train, labels[order[:30]])
    assert torch.equal(bundle.y_val, labels[order[-20:]])
    assert bundle.x_test is not None and bundle.x_test.shape == (7, 784)
    assert float(bundle.x_train.min()) >= 0.0 and float(bundle.x_train.max()) <= 1.0


def test_missing_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--data-root.*download: true"):
        load_dataset(DatasetSpec("mnist"), data_root=str(tmp_path))
    write_mnist_layout(tmp_path / "MNIST" / "raw", gz=True)  # torchvision reads only the unpacked files
    with pytest.raises(UserError, match="gunzip"):
        load_dataset(DatasetSpec("mnist"), data_root=str(tmp_path))


def test_cifar10_python_batches(tmp_path: Path) -> None:
    images, labels = write_cifar10(tmp_path)  # 5 x 4 train images, then 3 test images
    spec = DatasetSpec("cifar10", freeze({"n_train": 15, "n_val": 5, "n_test": 3}))
    bundle = load_dataset(spec, data_root=str(tmp_path))
    assert (bundle.n_features, bundle.n_outputs) == (3072, 10)
    order = carve_order(20, split_seed=1)
    expected = torch.from_numpy(images[:20]).float() / 255
    torch.testing.assert_close(bundle.x_train, expected[order[:15]], rtol=0, atol=0)
    assert torch.equal(bundle.y_val, torch.from_numpy(labels[:20])[order[-5:]])
    torch.testing.assert_close(bundle.x_test, torch.from_numpy(images[20:]).float() / 255, rtol=0, atol=0)


def test_cifar10_missing_or_corrupt_batches(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data_batch_1.*--data-root.*download: true"):
        load_dataset(DatasetSpec("cifar10"), data_root=str(tmp_path))
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset(DatasetSpec("cifar10", freeze({"n_train": 10, "n_val": 5, "n_test": 1})), str(tmp_path))


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_datasets, "SYSTEM_FASHION_MNIST_DIR", Path("/usr/share/datasets/fashion-mnist"))
    bundle = load_dataset(DatasetSpec("fashion-mnist", freeze({"n_train": 500, "n_val": 100, "n_test": 100})))
    assert bundle.x_train.shape == (500, 784) and bundle.x_val.shape == (100, 784)
    assert set(bundle.y_val.tolist()) <= set(range(10)) and len(set(bundle.y_train.tolist())) == 10


# ---- embedded datasets ---------------------------------------------------------------------------
def test_digits_split_is_seeded_and_disjoint() -> None:
    bundle = load_dataset(DatasetSpec("digits"))
    n_train, n_val, n_test = dataset_sizes("digits", {})
    assert (len(bundle.x_train), len(bundle.x_val), len(bundle.x_test)) == (n_train, n_val, n_test)
    assert n_train + n_val + n_test == 1797
    assert float(bundle.x_train.max()) == 1.0 and float(bundle.x_train.min()) == 0.0
    again = load_dataset(DatasetSpec("digits"))
    assert torch.equal(bundle.x_train, again.x_train) and torch.equal(bundle.y_val, again.y_val)
    other = load_dataset(DatasetSpec("digits", freeze({"split_seed": 7})))
    assert not torch.equal(bundle.y_train, other.y_train)
    all_rows = torch.cat([bundle.x_train, bundle.x_val, bundle.x_test])
    from sklearn.datasets import load_digits

    assert torch.equal(all_rows.sum(0), torch.as_tensor(load_digits().data, dtype=torch.float32).sum(0) / 16)


def test_synthetic_classification_is_seeded_and_balanced() -> None:
    params = {"n_train": 600, "n_val": 200, "n_features": 8, "n_classes": 4, "seed": 2}
    bundle = load_dataset(DatasetSpec("synthetic-classification", freeze(params)))
    assert (
        (bundle.n_features, bundle.n_outputs) == dataset_shape("synthetic-classification", params) == (8, 4)
    )
    assert bundle.x_train.shape == (600, 8) and bundle.y_val.shape == (200,)
    counts = torch.bincount(bundle.y_train, minlength=4)
    assert int(counts.min()) >= 600 // 10, counts  # every class is present in force
    assert torch.equal(
        bundle.y_train, load_dataset(DatasetSpec("synthetic-classification", freeze(params))).y_train
    )
    bigger_val = load_dataset(DatasetSpec("synthetic-classification", freeze({**params, "n_val": 300})))
    assert torch.equal(bundle.x_train, bigger_val.x_train)  # one size never reshuffles another part
    reseeded = load_dataset(DatasetSpec("synthetic-classification", freeze({**params, "seed": 3})))
    assert not torch.equal(bundle.x_train, reseeded.x_train)


def test_synthetic_regression_targets() -> None:
    params = {"n_train": 2000, "n_val": 100, "n_features": 6, "n_outputs": 3, "noise": 0.0}
    clean = load_dataset(DatasetSpec("synthetic-regression", freeze(params)))
    assert (
        clean.task == "regression"
        and clean.y_train.shape == (2000, 3)
        and clean.y_train.dtype == torch.float32
    )
    assert float(clean.x_train.min()) >= 0.0 and float(clean.x_train.max()) < 1.0
    # standardised teacher outputs: unit scale, so an untrained net starts near loss 1 and the floor is noise²
    assert torch.allclose(clean.y_train.std(0), torch.ones(3), atol=0.15)
    noisy = load_dataset(DatasetSpec("synthetic-regression", freeze({**params, "noise": 0.5})))
    assert torch.equal(clean.x_train, noisy.x_train)
    residual = (noisy.y_train - clean.y_train).std()
    assert 0.45 < float(residual) < 0.55
    uniform = load_dataset(DatasetSpec("synthetic-regression", freeze({**params, "targets": "uniform"})))
    assert float(uniform.y_train.min()) >= 0.0 and float(uniform.y_train.max()) < 1.0


# ---- registry and parameter validation ------------------------------------------------------------
def test_registry_answers_shapes_without_files(tmp_path: Path) -> None:
    assert set(dataset_names()) == {
        "synthetic-regression",
        "synthetic-classification",
        "digits",
        "fashion-mnist",
        "mnist",
        "cifar10",
        "modular-addition",
    }
    assert dataset_shape("cifar10", {"root": str(tmp_path / "nothing-here")}) == (3072, 10)
    assert dataset_shape("mnist", freeze({"n_train": 100})) == (784, 10)
    assert dataset_sizes("fashion-mnist", {"n_train": 100}) == (100, 10_000, 10_000)
    info = datasets.DATASETS["synthetic-regression"]
    assert (
        info.task == "regression" and info.n_outputs({"n_outputs": 7}) == 7 and info.defaults["noise"] == 0.1
    )


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("digitz", {}, r"unknown \(did you mean 'digits'\?\)"),
        (
            "fashion-mnist",
            {"n_trian": 5},
            r"no parameter 'n_trian' \(did you mean 'n_train'\?\); allowed: n_train",
        ),
        ("fashion-mnist", {"n_train": "5"}, r"'n_train' must be an integer"),
        ("fashion-mnist", {"n_train": True}, r"'n_train' must be an integer"),
        ("fashion-mnist", {"n_train": 55_000}, r"exceed its 60000 training images"),
        ("synthetic-regression", {"n_train": 0}, r"'n_train' must be at least 1"),
        ("synthetic-regression", {"targets": "gaussian"}, r"use one of teacher, uniform"),
        ("digits", {"val_fraction": 1.5}, r"must be below 1.0"),
        ("digits", {"val_fraction": 0.6, "test_fraction": 0.5}, r"leave -\d+ training"),
    ],
)
def test_bad_dataset_params_are_user_errors(name: str, params: dict, pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        dataset_shape(name, params)


def test_float_param_accepts_an_integer() -> None:
    assert datasets.DATASETS["synthetic-regression"].resolve({"noise": 1})["noise"] == 1.0


def test_bundle_to_recasts_floats_only() -> None:
    bundle = load_dataset(DatasetSpec("synthetic-classification", freeze({"n_train": 10, "n_val": 5})))
    moved = bundle.to("cpu", dtype=torch.float64)
    assert moved.x_train.dtype == torch.float64 and moved.y_train.dtype == torch.int64
    assert moved.x_test is None and bundle.x_train.dtype == torch.float32


# ---- BatchStream ---------------------------------------------------------------------------------
def _stream(n: int = 10, batch: int = 3, seed: int = 0) -> BatchStream:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1) * 2
    return BatchStream(x, torch.arange(n), batch, seed)


def test_batch_stream_covers_each_epoch_once_and_drops_the_tail() -> None:
    stream = _stream()
    assert stream.steps_per_epoch == 3
    seen_epochs = []
    for epoch in range(4):
        rows = []
        for index in range(3):
            assert (stream.epoch, stream.index_in_epoch) == (epoch, index)
            x, y = stream.next()
            assert x.shape == (3, 1) and torch.equal(x[:, 0], y.float() * 2)  # rows stay aligned
            rows += y.tolist()
        assert len(set(rows)) == 9  # no repeats inside an epoch; one example dropped
        seen_epochs.append(rows)
    assert (stream.epoch, stream.index_in_epoch) == (4, 0)
    assert len({tuple(r) for r in seen_epochs}) > 1  # reshuffled between epochs


def test_batch_stream_is_deterministic_per_seed() -> None:
    a, b, c = _stream(seed=4), _stream(seed=4), _stream(seed=5)
    batches_a = [a.next()[1].tolist() for _ in range(7)]
    assert batches_a == [b.next()[1].tolist() for _ in range(7)]
    assert batches_a != [c.next()[1].tolist() for _ in range(7)]


def test_batch_stream_rejects_bad_sizes() -> None:
    with pytest.raises(UserError, match="batch size 11 must be between 1 and the 10"):
        _stream(batch=11)
    with pytest.raises(UserError):
        _stream(batch=0)
    assert _stream(batch=10).steps_per_epoch == 1


# ---- losses and evaluation ------------------------------------------------------------------------
def test_evaluate_matches_one_full_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x, labels, targets = torch.randn(50, 5), torch.randint(0, 3, (50,)), torch.randn(50, 3)
    model.train()
    loss, accuracy = evaluate(model, x, labels, "classification", batch_size=7)
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(float(loss_fn_for("classification")(out, labels)), rel=1e-6)
    assert accuracy == pytest.approx(float((out.argmax(1) == labels).float().mean()))
    assert model.training  # mode restored
    mse, none = evaluate(model, x, targets, "regression", batch_size=16)
    assert none is None and mse == pytest.approx(float(loss_fn_for("regression")(out, targets)), rel=1e-6)


def test_loss_and_evaluate_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        loss_fn_for("ranking")
    with pytest.raises(ValueError, match="empty"):
        evaluate(nn.Linear(2, 2), torch.empty(0, 2), torch.empty(0, dtype=torch.long), "classification")
