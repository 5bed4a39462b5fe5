"""`model:` in a train suite beyond the MLP: built-in families and factories, what the dataset fills in,
the errors a wrong model earns before any training, `list`'s sites, and a pair trained end to end."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from telebench.errors import UserError
from telebench.experiments.pairs.load import load_suite
from telebench.experiments.pairs.plan import expand
from telebench.experiments.pairs.task import run_pair
from telebench.experiments.pairs.view import render_plan
from telebench.training.model_families import build_from_spec
from telebench.training.specs import ModelSpec, thaw

CNN = {"family": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16, "batch_norm": True}}
TRANSFORMER = {"family": "transformer", "kwargs": {"d_model": 16, "heads": 2, "layers": 1, "d_ff": 32}}


def write(tmp_path: Path, model: dict, dataset: dict | None = None, **case: object) -> Path:
    doc = {
        "name": "models",
        "defaults": {"budget": {"steps": 12}, "eval_every": 6, "seeds": [0], "calibration_seeds": [100],
                     "batch_size": 32, "arms": ["baseline", "teleport", "reset-only", "random-teleport"],
                     "teleport": {"group": "auto", "steps": 3, "batch_size": 64,
                                  "schedule": {"at_steps": [0, 6]}}},
        "cases": [{"name": "net", "dataset": dataset or {"name": "digits"}, "model": model,
                   "optimizers": [{"name": "momentum", "lr": 0.05, "kwargs": {"momentum": 0.9}}], **case}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Deterministic reductions for the trained pairs."""


def test_a_cnn_takes_its_channels_image_size_and_classes_from_the_dataset(tmp_path: Path) -> None:
    plan = expand(load_suite(write(tmp_path, CNN)))
    model = plan[0].model
    assert (model.family, model.inputs) == ("cnn", "image")
    assert thaw(model.kwargs) == {"batch_norm": True, "channels": (4, 8), "hidden": 16, "image_size": 8,
                                  "in_channels": 1, "n_classes": 10}
    net = build_from_spec(model, seed=0)
    assert type(net).__name__ == "CNN" and net.fc2.out_features == 10


def test_a_transformer_on_modular_addition_reads_tokens(tmp_path: Path) -> None:
    plan = expand(load_suite(write(tmp_path, TRANSFORMER, {"name": "modular-addition", "modulus": 17})))
    assert plan[0].model.inputs == "tokens"
    assert thaw(plan[0].model.kwargs)["vocab"] == 18 and thaw(plan[0].model.kwargs)["n_classes"] == 17


def test_a_factory_model_builds_from_its_target(tmp_path: Path) -> None:
    factory = {"factory": "telebench.training.model_families:ResNet",
               "kwargs": {"in_channels": 1, "widths": [4], "n_classes": 10}}
    plan = expand(load_suite(write(tmp_path, {**factory, "inputs": "image"})))
    assert plan[0].model.family == "factory"
    assert type(build_from_spec(plan[0].model, seed=1)).__name__ == "ResNet"


@pytest.mark.parametrize(("model", "dataset", "teleport", "message"), [
    ({**CNN, "widths": [64, 10]}, None, None, r"cases\[0\]\.model\.widths: belongs to an MLP, but the model is "
                                              r"family 'cnn'"),
    (TRANSFORMER, None, None, r"model\.inputs: model family 'transformer' takes tokens inputs but dataset "
                              r"'digits' gives image rows"),
    ({"widths": [3, 8, 17]}, {"name": "modular-addition", "modulus": 17}, None, r"gives token ids, which an MLP "
                                                                               r"cannot read"),
    (CNN, None, {"group": "gl-data"}, r"defaults\.teleport\.group: group 'gl-data' acts on MLP nn.Sequential "
                                      r"models only"),
    ({"family": "cnn", "kwargs": {"channels": [4]}}, None, {"group": "norm-scale"},
     r"teleport\.group: the model has no exact 'norm-scale' site"),
    ({"family": "cnn", "kwargs": {"chanels": [4]}}, None, None, r"cases\[0\]\.model: model family 'cnn' does not "
                                                                r"take \['chanels'\]"),
    ({"factory": "no.such.module:net"}, None, None, r"cases\[0\]\.model: model factory 'no.such.module:net' "
                                                    r"cannot be loaded"),
    ({"family": "vgg"}, None, None, r"model family"),
])
def test_a_wrong_model_is_one_sentence_naming_the_key(tmp_path: Path, model: dict, dataset: dict | None,
                                                      teleport: dict | None, message: str) -> None:
    path = write(tmp_path, model, dataset)
    if teleport is not None:
        doc = yaml.safe_load(path.read_text())
        doc["defaults"]["teleport"].update(teleport)
        path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=message):
        load_suite(path)


def test_list_shows_each_cases_sites_and_group_dimension(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, CNN))
    buffer = io.StringIO()
    render_plan(suite, expand(suite), Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "auto: 5 sites (norm-scale 2, channel-rescale 3), group dimension 30" in text
    assert "1,046 parameters" in text


def test_mlp_trial_ids_are_unchanged_by_the_model_families() -> None:
    assert ModelSpec((64, 16, 10), "relu").is_mlp
    plan = expand(load_suite(Path(__file__).parents[1] / "suites" / "quickstart.yaml"))
    blob = plan[0].to_dict()
    for name in ("family", "kwargs", "inputs"):
        del blob["model"][name]
    if blob["role"] == "compared":
        del blob["role"]
    assert plan[0].id == hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("policy", ["reset", "transport"])
def test_a_batchnorm_cnn_pair_trains_and_every_teleport_keeps_the_held_out_loss(tmp_path: Path, policy: str) -> None:
    doc = yaml.safe_load(write(tmp_path, CNN).read_text())
    doc["defaults"]["teleport"]["state_policy"] = policy
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(doc))
    plan = [t for t in expand(load_suite(tmp_path / "suite.yaml")) if t.role == "compared"]
    records = {r["arm"]: r for r in run_pair(plan, None)}
    assert {r["status"] for r in records.values()} == {"ok"}, [r["message"] for r in records.values()]
    for arm in ("teleport", "random-teleport"):
        moves = records[arm]["teleports"]
        assert len(moves) == 2 and all(m["accepted"] for m in moves)
        assert max(m["held_out_relative_loss_change"] for m in moves) < 1e-4
    assert records["teleport"]["teleports"][0]["objective_after"] > records["teleport"]["teleports"][0]["objective_before"]
    assert records["teleport"]["history"][-1]["train_loss"] != records["baseline"]["history"][-1]["train_loss"]


def test_a_transformer_pair_trains_on_modular_addition(tmp_path: Path) -> None:
    plan = [t for t in expand(load_suite(write(tmp_path, TRANSFORMER, {"name": "modular-addition", "modulus": 17})))
            if t.role == "compared"]
    records = {r["arm"]: r for r in run_pair(plan, None)}
    assert {r["status"] for r in records.values()} == {"ok"}, [r["message"] for r in records.values()]
    assert all(m["accepted"] for m in records["teleport"]["teleports"])
    assert records["teleport"]["final_test_accuracy"] is not None


def test_modular_addition_holds_every_equation_once_in_disjoint_splits() -> None:
    import torch

    from telebench.training.datasets import load_dataset
    from telebench.training.specs import DatasetSpec, freeze

    data = load_dataset(DatasetSpec("modular-addition", freeze({"modulus": 7})))
    assert data.x_test is not None and data.y_test is not None
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    y = torch.cat([data.y_train, data.y_val, data.y_test])
    assert len(x) == 49 and len({tuple(r) for r in x.tolist()}) == 49
    assert torch.equal(y, (x[:, 0] + x[:, 1]) % 7) and bool((x[:, 2] == 7).all())
    assert (len(data.x_train), len(data.x_val)) == (round(0.5 * 49), round(0.25 * 49)) and data.vocab == 8
