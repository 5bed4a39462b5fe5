"""A results dict as a table, for pandas, spreadsheets and parquet (`telebench export`).

Pure: a results dict of any kind (as `results.schema.load_results` returns it) in, rows or a pandas
DataFrame out; `telebench.commands.export` reads and writes the files. Each kind exports its natural
rows:

- `train`: one row per trial (case, optimizer, arm, seed, device, status, target, time and steps to target,
  clocks, final losses and accuracies, teleport counts); with `history`, one row per evaluation point;
- `meta`: one row per case × arm × test seed, with the final test loss; with `history`, one row per
  test step and its loss;
- `correlation`: one row per network, with every measured metric as a column `metric.<name>`.

Every row starts with `suite` and `kind`, so tables from several files concatenate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from telebench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

Row = dict[str, Any]

TRIAL_FIELDS = (
    "case", "optimizer", "arm", "arm_kind", "seed", "device", "status", "message",
    "time_to_target_s", "steps_to_target", "steps", "epochs", "train_clock_s", "teleport_clock_s",
    "eval_clock_s", "wall_s", "teleport_overhead", "final_train_loss", "final_val_loss", "final_val_accuracy",
    "final_test_loss", "final_test_accuracy", "host", "executor", "attempt", "id",
)
INTEGERS = {"seed", "steps_to_target", "steps", "attempt", "teleports", "teleports_accepted", "step",
            "meta_parameters", "worker"}
HISTORY_KEYS = ("case", "optimizer", "arm", "arm_kind", "seed", "device", "status", "id")


def _start(results: dict[str, Any]) -> Row:
    return {"suite": results.get("suite"), "kind": results.get("kind")}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _target(trial: dict[str, Any]) -> Row:
    target = trial.get("target")
    target = target if isinstance(target, dict) else {}
    return {"target_metric": target.get("metric"), "target_value": target.get("value"),
            "target_kind": target.get("kind")}


def _teleports(trial: dict[str, Any]) -> Row:
    teleports = _dicts(trial.get("teleports"))
    return {"teleports": len(teleports), "teleports_accepted": sum(bool(t.get("accepted")) for t in teleports)}


def train_rows(results: dict[str, Any], history: bool = False) -> Iterator[Row]:
    """One row per trial, or with `history` one per evaluation point of each trial."""
    start = _start(results)
    for record in _dicts(results.get("trials")):
        trial, spec = dict(record), record.get("spec")
        if trial.get("arm_kind") is None and isinstance(spec, dict):  # older files keep it in the spec only
            trial["arm_kind"] = spec.get("arm_kind")
        if not history:
            yield {**start, **{k: trial.get(k) for k in TRIAL_FIELDS[:7]}, **_target(trial),
                   **{k: trial.get(k) for k in TRIAL_FIELDS[7:]}, **_teleports(trial)}
            continue
        keys = {k: trial.get(k) for k in HISTORY_KEYS}
        for point in _dicts(trial.get("history")):
            yield {**start, **keys, **point}


def meta_rows(results: dict[str, Any], history: bool = False) -> Iterator[Row]:
    """One row per case × arm × test seed (the final test loss), or with `history` one per test step."""
    start = _start(results)
    for case in _dicts(results.get("cases")):
        group = case.get("group")
        group_name = group.get("name") if isinstance(group, dict) else group
        for arm in _dicts(case.get("arms")):
            meta_train = arm.get("meta_train")
            keys = {"case": case.get("name"), "group": group_name, "arm": arm.get("name"),
                    "update": arm.get("update"), "teleport": arm.get("teleport"), "lr": arm.get("lr")}
            for test in _dicts(arm.get("test")):
                loss = test.get("loss")
                losses: list[Any] = loss if isinstance(loss, list) else []
                if history:
                    for step, loss in enumerate(losses):
                        yield {**start, **keys, "seed": test.get("seed"), "step": step, "loss": loss}
                    continue
                yield {**start, **keys, "seed": test.get("seed"), "steps": max(len(losses) - 1, 0),
                       "initial_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                       "meta_parameters": arm.get("meta_parameters"),
                       "meta_train_seconds": meta_train.get("seconds") if isinstance(meta_train, dict) else None}


def correlation_rows(results: dict[str, Any], history: bool = False) -> Iterator[Row]:
    """One row per trained network, with its metrics as `metric.<name>` columns."""
    if history:
        raise UserError("--history: a correlation study records no per-step history, only each network's final "
                        "metrics; drop --history.")
    start = _start(results)
    for case in _dicts(results.get("cases")):
        for network in _dicts(case.get("networks")):
            found = network.get("metrics")
            metrics: dict[str, Any] = found if isinstance(found, dict) else {}
            plain = {k: v for k, v in network.items() if not isinstance(v, (dict, list))}
            yield {**start, "case": case.get("name"), **plain, **{f"metric.{k}": v for k, v in metrics.items()}}


ROWS = {"train": train_rows, "meta": meta_rows, "correlation": correlation_rows}


def rows(results: dict[str, Any], history: bool = False) -> list[Row]:
    """The rows `telebench export` writes for a results dict of any kind."""
    kind = results.get("kind")
    if kind not in ROWS:
        raise UserError(f"kind {kind!r}: export knows {', '.join(ROWS)} results; pass a results.json from `telebench run`.")
    return list(ROWS[kind](results, history))


def to_frame(results: dict[str, Any], history: bool = False) -> pd.DataFrame:
    """`rows` as a pandas DataFrame (columns in first-seen order; a column absent from a row is empty)."""
    import pandas as pd

    table = rows(results, history)
    columns = list(dict.fromkeys(key for row in table for key in row))
    frame = pd.DataFrame.from_records(table, columns=columns)
    for column in INTEGERS.intersection(columns):  # a null would make pandas store them as floats (300.0)
        try:
            frame[column] = frame[column].astype("Int64")
        except (TypeError, ValueError):  # not whole numbers after all: keep what pandas chose
            pass
    return frame
