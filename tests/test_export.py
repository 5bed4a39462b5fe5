"""`telebench export`: results of every kind as flat rows, CSV and parquet files pandas reads back."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from telebench.commands.export import PYARROW_MISSING, default_out, run_export
from telebench.errors import UserError
from telebench.results.export import rows, to_frame
from telebench.results.schema import load_results

pd = pytest.importorskip("pandas")

FIXTURES = Path(__file__).parent / "fixtures" / "compare"

META: dict[str, Any] = {
    "schema": "telebench.results/2", "kind": "meta", "suite": "m", "cases": [{
        "name": "relu-rescale", "group": {"name": "rescale", "exact": True},
        "arms": [
            {"name": "gd", "update": "gd", "teleport": False, "lr": 0.1, "meta_parameters": 0,
             "meta_train": {"seconds": 0.0}, "test": [{"seed": 7, "loss": [3.0, 2.0, 1.5]},
                                                      {"seed": 8, "loss": [3.1, 2.2, 1.6]}]},
            {"name": "lstm-teleport", "update": "lstm", "teleport": True, "lr": None, "meta_parameters": 120,
             "meta_train": {"seconds": 4.5}, "test": [{"seed": 7, "loss": [3.0, 1.0, 0.5]}]},
        ],
    }],
}
CORRELATION: dict[str, Any] = {
    "schema": "telebench.results/2", "kind": "correlation", "suite": "c", "cases": [{
        "name": "digits", "correlations": [{"metric": "sharpness", "r": 0.4}],
        "networks": [
            {"case": "digits", "seed": 0, "status": "ok", "val_loss": 0.4, "gap": 0.02,
             "metrics": {"sharpness": 0.01, "curvature-rescale": 0.2}, "sharpness_by_radius": {"sharpness": {}}},
            {"case": "digits", "seed": 1, "status": "diverged", "val_loss": None, "gap": None, "metrics": {}},
        ],
    }],
}


def console() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_a_train_file_has_one_flat_row_per_trial() -> None:
    data = load_results(FIXTURES / "base.json")
    table = rows(data)
    assert len(table) == len(data["trials"]) == 10
    first = table[0]
    assert list(first)[:10] == ["suite", "kind", "case", "optimizer", "arm", "arm_kind", "seed", "device", "status",
                                "target_metric"]
    assert first["suite"] == "compare-fixture" and first["kind"] == "train"
    assert (first["arm"], first["seed"], first["time_to_target_s"], first["steps_to_target"]) == ("baseline", 0, 1.0, 200)
    assert (first["target_value"], first["final_val_loss"], first["teleports"]) == (0.31, 0.30, 0)
    frame = to_frame(data)
    assert frame.shape == (10, len(first)) and str(frame["steps_to_target"].dtype) == "Int64"
    assert frame.groupby("arm")["time_to_target_s"].median().to_dict() == pytest.approx(
        {"baseline": 1.04, "teleport": 0.84})


def test_history_has_one_row_per_evaluation_point() -> None:
    data = load_results(FIXTURES / "base.json")
    table = rows(data, history=True)
    assert len(table) == sum(len(t["history"]) for t in data["trials"])
    assert table[0] == {"suite": "compare-fixture", "kind": "train", "case": "digits-relu", "optimizer": "sgd",
                        "arm": "baseline", "arm_kind": "baseline", "seed": 0, "device": "cpu", "status": "ok",
                        "id": data["trials"][0]["id"], "step": 0, "epoch": 0.0, "train_clock_s": 0.0,
                        "train_loss": 2.3, "val_loss": 2.3, "val_accuracy": 0.1}


def test_meta_rows_are_case_arm_and_test_seed_with_the_final_loss() -> None:
    table = rows(META)
    assert [(r["arm"], r["seed"], r["final_loss"], r["steps"]) for r in table] == [
        ("gd", 7, 1.5, 2), ("gd", 8, 1.6, 2), ("lstm-teleport", 7, 0.5, 2)]
    assert table[2]["group"] == "rescale" and table[2]["meta_train_seconds"] == 4.5
    history = rows(META, history=True)
    assert len(history) == 9 and history[-1] == {**{k: table[2][k] for k in ("suite", "kind", "case", "group", "arm",
                                                 "update", "teleport", "lr", "seed")}, "step": 2, "loss": 0.5}


def test_correlation_rows_are_one_per_network_with_its_metrics() -> None:
    table = rows(CORRELATION)
    assert [(r["seed"], r["status"], r.get("metric.sharpness")) for r in table] == [(0, "ok", 0.01), (1, "diverged", None)]
    assert "sharpness_by_radius" not in table[0] and table[0]["metric.curvature-rescale"] == 0.2
    frame = to_frame(CORRELATION)
    assert list(frame.columns)[-2:] == ["metric.sharpness", "metric.curvature-rescale"]
    with pytest.raises(UserError, match="records no per-step history"):
        rows(CORRELATION, history=True)


def test_export_writes_csv_beside_the_results_and_pandas_reads_it(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    shutil.copy(FIXTURES / "base.json", results)
    path = run_export(results, "csv", None, False, console())
    assert path == tmp_path / "results.csv" == default_out(results, "csv", False)
    frame = pd.read_csv(path)
    assert len(frame) == 10 and set(frame["arm"]) == {"baseline", "teleport"}
    history = run_export(results, "csv", tmp_path / "h" / "points.csv", True, console())
    assert len(pd.read_csv(history)) == 10  # one evaluation point per trial in the fixture


def test_export_writes_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(META))
    path = run_export(results, "parquet", None, False, console())
    assert path.name == "results.parquet"
    frame = pd.read_parquet(path)
    assert frame["final_loss"].tolist() == [1.5, 1.6, 0.5]


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    with pytest.raises(UserError) as info:
        run_export(FIXTURES / "base.json", "parquet", tmp_path / "x.parquet", False, console())
    assert str(info.value) == PYARROW_MISSING and "pip install 'telebench[parquet]'" in PYARROW_MISSING
    assert not (tmp_path / "x.parquet").exists()


def test_a_bad_format_or_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--format 'xlsx': use one of csv, parquet"):
        run_export(FIXTURES / "base.json", "xlsx", None, False, console())
    with pytest.raises(UserError, match="not a telebench results file"):
        run_export(FIXTURES / "neither.json", "csv", tmp_path / "x.csv", False, console())
