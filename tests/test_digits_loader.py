"""The digits loader reads scikit-learn's bundled file itself (importing scikit-learn takes seconds), and
gives bit for bit what sklearn.datasets.load_digits gives (telebench/training/image_datasets.py)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from telebench.training import image_datasets as images
from telebench.training.datasets import load_dataset
from telebench.training.specs import DatasetSpec, freeze

pytest.importorskip("sklearn")


def bits(t: torch.Tensor) -> torch.Tensor:
    """A float32 tensor's bit patterns, so equal means bit-identical (0.0 and -0.0 differ)."""
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def test_the_file_is_found_without_importing_sklearn() -> None:
    code = ("import sys; from telebench.training.image_datasets import digits_file, read_digits_csv; "
            "path = digits_file(); x, y = read_digits_csv(path); "
            "print(path.name, tuple(x.shape), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["digits.csv.gz", "(1797,", "64)", "False"]


def test_reading_the_file_equals_load_digits_bit_for_bit() -> None:
    path = images.digits_file()
    assert path is not None
    x, y = images.read_digits_csv(path)
    x_ref, y_ref = images.read_digits_sklearn()
    assert (x.dtype, y.dtype, x.shape, y.shape) == (x_ref.dtype, y_ref.dtype, x_ref.shape, y_ref.shape)
    assert torch.equal(bits(x), bits(x_ref)) and torch.equal(y, y_ref)
    assert x.is_contiguous() and y.is_contiguous()
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and sorted(set(y.tolist())) == list(range(10))


@pytest.mark.parametrize("params", [{}, {"val_fraction": 0.3, "test_fraction": 0.0, "split_seed": 7}])
def test_the_bundle_is_the_same_through_either_path(monkeypatch: pytest.MonkeyPatch,
                                                    params: dict[str, float]) -> None:
    spec = DatasetSpec("digits", freeze(params))
    images._digits_pool.cache_clear()
    direct = load_dataset(spec)
    monkeypatch.setattr(images, "digits_file", lambda: None)  # no file found: scikit-learn's own loader
    images._digits_pool.cache_clear()
    try:
        fallback = load_dataset(spec)
    finally:
        images._digits_pool.cache_clear()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(direct, name), getattr(fallback, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(bits(a), bits(b)), name
    assert (direct.n_features, direct.n_outputs, direct.image_shape) == (64, 10, (1, 8, 8))


def test_a_loaded_bundle_does_not_alias_the_cached_pool() -> None:
    first = load_dataset(DatasetSpec("digits"))
    first.x_train.add_(1.0)  # a caller that writes into its tensors must not change the next load
    second = load_dataset(DatasetSpec("digits"))
    assert float(second.x_train.max()) == 1.0


def test_a_file_of_another_form_falls_back_to_sklearn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    small = tmp_path / "small.csv.gz"
    small.write_bytes(gzip.compress(b"1,2\n3,4\n"))
    with pytest.raises(ValueError, match="1797 x 65"):
        images.read_digits_csv(small)
    odd = tmp_path / "digits.csv.gz"
    odd.write_bytes(gzip.compress(b"pixel_0,pixel_1\n1,2\n"))  # a header: not the form read here
    monkeypatch.setattr(images, "digits_file", lambda: odd)
    images._digits_pool.cache_clear()
    try:
        x, y = images._digits_pool()
    finally:
        images._digits_pool.cache_clear()
    x_ref, y_ref = images.read_digits_sklearn()
    assert torch.equal(bits(x), bits(x_ref)) and torch.equal(y, y_ref)
