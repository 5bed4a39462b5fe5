"""Pre-registered comparisons: the declaration's checks, the two Holm families, and reports that state
the declared comparisons first and mark everything else exploratory."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console
from scipy import stats
from synthetic_results import make_results, make_trial

from telebench.analysis.summary import resolve_targets, summarise
from telebench.config.overrides import Overrides
from telebench.errors import UserError
from telebench.experiments.pairs.load import load_suite
from telebench.render.load import ensure_summary
from telebench.render.markdown import render_markdown
from telebench.render.terminal import render_terminal

SUITE: dict[str, Any] = {
    "name": "prereg",
    "defaults": {"budget": {"steps": 20}, "eval_every": 10, "seeds": [0, 1], "calibration_seeds": [100],
                 "arms": ["baseline", "teleport", "reset-only"]},
    "cases": [{"name": "digits", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "adam", "lr": 0.01}, {"name": "sgd", "lr": 0.1}]},
              {"name": "other", "dataset": {"name": "digits"}, "model": {"widths": [64, 8, 10], "activation": "relu"},
               "optimizers": [{"name": "adam", "lr": 0.01}], "arms": ["baseline", "random-teleport"]}],
}


def write(tmp_path: Path, comparisons: Any) -> Path:
    doc = {**SUITE, "analysis": {"primary_metric": "final_train_loss", "primary_comparisons": comparisons}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ---- the declaration ----------------------------------------------------------------------------------


def test_a_valid_declaration_loads_with_baseline_as_the_default_and_is_recorded(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, [{"arm": "teleport", "against": "reset-only"},
                                        {"arm": "teleport", "case": "digits", "optimizer": "sgd"}]))
    assert suite.analysis.record() == {"primary_metric": "final_train_loss", "primary_comparisons": [
        {"arm": "teleport", "against": "reset-only", "case": None, "optimizer": None},
        {"arm": "teleport", "against": "baseline", "case": "digits", "optimizer": "sgd"}]}
    plain = {**SUITE}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    assert load_suite(tmp_path / "plain.yaml").analysis.record() == {"primary_metric": "time_to_target"}


@pytest.mark.parametrize(("comparisons", "message"), [
    ([{"arm": "teleprot"}], r"analysis\.primary_comparisons\[0\]\.arm: no arm 'teleprot' in any case; did you "
                            r"mean 'teleport'\? choose from baseline, teleport, reset-only, random-teleport\.$"),
    ([{"arm": "teleport", "against": "reset"}], r"primary_comparisons\[0\]\.against: no arm 'reset' in any case; "
                                                r"did you mean 'reset-only'\?"),
    ([{"arm": "teleport"}, {"arm": "teleport", "case": "digitz"}],
     r"primary_comparisons\[1\]\.case: the suite has no case 'digitz'; did you mean 'digits'\? choose from digits, other"),
    ([{"arm": "teleport", "optimizer": "adamw"}], r"primary_comparisons\[0\]\.optimizer: no optimizer labelled "
                                                  r"'adamw' in any case; did you mean 'adam'\?"),
    ([{"arm": "random-teleport", "case": "digits"}], r"primary_comparisons\[0\]\.arm: no arm 'random-teleport' in "
                                                     r"case 'digits'"),
    ([{"arm": "teleport", "against": "teleport"}], r"primary_comparisons\[0\]\.against: compares arm 'teleport' "
                                                   r"with itself"),
    ([{"arm": "teleport", "against": "random-teleport"}], r"primary_comparisons\[0\]: no case has both arm "
                                                          r"'teleport' and arm 'random-teleport'; compare arms of one case\.$"),
    ([{"arm": "teleport"}, {"arm": "teleport", "against": "baseline"}],
     r"primary_comparisons\[1\]: repeats primary_comparisons\[0\]; list each comparison once\.$"),
    ([{"arm": "teleport", "agianst": "baseline"}], r"primary_comparisons\[0\]\.agianst: unknown key 'agianst'; "
                                                   r"did you mean 'against'\?"),
    ([], r"analysis\.primary_comparisons"),
    ([{"against": "baseline"}], r"primary_comparisons\[0\]\.arm"),
])
def test_a_declaration_that_does_not_fit_the_suite_is_one_sentence_naming_the_key(
        tmp_path: Path, comparisons: Any, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load_suite(write(tmp_path, comparisons))
    assert str(info.value).startswith(f"{tmp_path / 'suite.yaml'}: ") and str(info.value).count("\n") == 0


def test_arms_dropped_by_the_arms_option_are_named_and_cases_left_out_are_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, [{"arm": "teleport", "against": "reset-only"}, {"arm": "random-teleport"}])
    with pytest.raises(UserError, match=r"\.against: no arm 'reset-only' in any case \(--arms keeps baseline, "
                                        r"teleport\)"):
        load_suite(path, Overrides(arms=["baseline", "teleport"]))
    assert [c.name for c in load_suite(path, Overrides(cases=["digits"])).cases] == ["digits"]


# ---- the two families ---------------------------------------------------------------------------------

SEEDS = 10
TARGET = {"metric": "train_loss", "kind": "absolute", "value": 0.5, "slack": 0.0}
# per arm: on how many of the 10 seeds it is faster than the baseline (1.5× the rate; slower: 0.6×)
FASTER = {"teleport": 10, "teleport-keep": 9, "reset-only": 8, "random-teleport": 7}
DECLARED = [{"arm": "teleport", "against": "baseline"}, {"arm": "teleport", "against": "reset-only"},
            {"arm": "teleport-keep", "against": "baseline"}]


def _trials() -> list[dict[str, Any]]:
    trials = []
    for seed in range(SEEDS):
        common = dict(case="c", optimizer="sgd", seed=seed, target=TARGET, step_s=0.01)
        trials.append(make_trial(arm="baseline", rate=0.02, **common))
        for arm, faster in FASTER.items():
            factor = (1.5 if arm == "teleport" else 1.2) if seed < faster else 0.6
            trials.append(make_trial(arm=arm, arm_kind="teleport" if "teleport" in arm else arm, rate=0.02 * factor,
                                     **common))
    return trials


def _declared_results() -> dict[str, Any]:
    results = make_results(_trials())
    results["analysis"] = {"primary_metric": "time_to_target", "alpha": 0.05, "primary_comparisons": DECLARED}
    return ensure_summary(results)


def sign_p(positives: int, n: int) -> float:
    return float(stats.binomtest(positives, n, 0.5).pvalue)


def holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_holm_runs_over_the_declared_family_alone_and_apart_over_the_exploratory_one() -> None:
    results = _declared_results()
    pre = results["analysis"]["preregistered"]
    assert [(r["arm"], r["baseline_arm"]) for r in pre] == [(d["arm"], d["against"]) for d in DECLARED]
    raw = [sign_p(10, 10), sign_p(10, 10), sign_p(9, 10)]  # teleport beats reset-only on every seed too
    assert [r["p_value"] for r in pre] == pytest.approx(raw)
    assert [r["p_adjusted"] for r in pre] == pytest.approx(holm_by_hand(raw))
    assert {r["holm_m"] for r in pre} == {3} and [r["family"] for r in pre] == ["pre-registered"] * 3
    assert [r["verdict"] for r in pre] == ["faster", "faster", "faster"]

    rows = {r["arm"]: r for r in results["summary"]}
    assert rows["baseline"]["family"] is None
    assert rows["teleport"]["family"] == rows["teleport-keep"]["family"] == "pre-registered"
    assert rows["teleport"]["p_adjusted"] == pytest.approx(pre[0]["p_adjusted"])  # the same comparison, once
    explore_raw = [sign_p(8, 10), sign_p(7, 10)]
    for arm, adjusted in zip(("reset-only", "random-teleport"), holm_by_hand(explore_raw), strict=True):
        assert rows[arm]["family"] == "exploratory" and rows[arm]["holm_m"] == 2
        assert rows[arm]["p_adjusted"] == pytest.approx(adjusted)
    # one family of 4 without the declaration, as before: Holm over every row
    plain = summarise(resolve_targets(_trials()))
    raw_all = [sign_p(FASTER[r["arm"]], 10) for r in plain if r["arm"] != "baseline"]
    assert [r["p_adjusted"] for r in plain if r["arm"] != "baseline"] == pytest.approx(holm_by_hand(raw_all))
    assert all("family" not in r for r in plain)
    assert np.isclose(holm_by_hand(raw_all)[1], min(1.0, 3 * sign_p(9, 10)))


def test_the_report_states_the_declared_comparisons_first_and_the_rest_as_exploratory() -> None:
    results = _declared_results()
    text = render_markdown(results, {})
    heads = [text.index(h) for h in ("## Pre-registered comparisons", "## Environment", "## Exploratory comparisons",
                                     "## Methods", "## Case: c")]
    assert heads == sorted(heads) and "## Summary" not in text
    section = text[heads[0]:heads[1]]
    pre = results["analysis"]["preregistered"]
    assert "| c | sgd | cpu | teleport | reset-only | 10 |" in section
    assert f"| 97.85% | 0.002 → {pre[1]['p_adjusted']:.2g} | faster |" in section  # real level, raw → Holm
    assert "Holm's correction runs over these 3 comparison(s) alone" in section
    explore = text[heads[2]:heads[3]]
    assert "| c | sgd | cpu | reset-only |" in explore and "| c | sgd | cpu | teleport |" not in explore
    assert "over these 2 comparison(s) apart from the pre-registered ones" in explore
    assert "- *Pre-registered.* With sgd, teleport" in text and "- *Exploratory.* With sgd, reset-only" in text

    console = Console(file=io.StringIO(), width=160, color_system=None)
    render_terminal(results, console)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.index("pre-registered comparisons (Holm over these 3)") < out.index("exploratory") < out.index("case c")
    assert "within each family apart: over the 3 pre-registered comparison(s), and over the 2 exploratory" in " ".join(
        out.split())


def test_a_declared_comparison_absent_from_the_results_is_listed_not_dropped() -> None:
    results = make_results(_trials())
    results["analysis"] = {"primary_comparisons": [*DECLARED, {"arm": "teleport", "case": "elsewhere"}]}
    text = render_markdown(ensure_summary(results), {})
    assert "Declared but not in these results (left out by --cases or --arms, or never run): teleport vs " \
           "baseline, case elsewhere." in text


def test_old_results_without_a_declaration_render_as_before(tmp_path: Path) -> None:
    results = ensure_summary(make_results())
    assert "preregistered" not in results["analysis"] and all("family" not in r for r in results["summary"])
    text = render_markdown(results, {})
    assert "## Summary" in text and "Pre-registered" not in text and "exploratory" not in text.lower()
    for name in ("base.json", "summary_only.json"):  # schema-1 files with no `analysis` at all
        copy = tmp_path / name
        shutil.copy(Path(__file__).parent / "fixtures" / "compare" / name, copy)
        from telebench.commands.suites import rerender

        rerender(copy, tmp_path / name.removesuffix(".json"), Console(file=io.StringIO()))
        report = (tmp_path / name.removesuffix(".json") / "report.md").read_text(encoding="utf-8")
        assert "## Summary" in report and "Pre-registered" not in report
        assert "primary_comparisons" not in json.loads(copy.read_text())


def test_a_loss_primary_metric_says_its_verdict_of_the_loss() -> None:
    """The row word stays faster/slower (compare and replication judge by it); tables print a decision
    taken on a loss as lower/higher loss, and time/steps verdicts as they are."""
    from telebench.render import fmt
    from telebench.render.preregistered import cells
    from telebench.render.replication import cells as replication_cells

    assert fmt.verdict_word("slower", "final_val_loss") == "higher loss"
    assert fmt.verdict_word("faster", "auc_log_train_loss") == "lower loss"
    assert fmt.verdict_word("slower", "time_to_target") == "slower"
    assert fmt.verdict_word("no clear difference", "final_train_loss") == "no clear difference"
    row = {"case": "c", "optimizer": "sgd", "device": "cpu", "arm": "up", "baseline_arm": "baseline", "n_pairs": 12,
           "primary_metric": "final_val_loss", "median": 0.004, "ci_low": 0.001, "ci_high": 0.006, "ci_level": 0.96,
           "p_value": 0.0005, "p_adjusted": 0.009, "verdict": "slower"}
    assert cells(row)[-1] == "higher loss"
    line = {"case": "c", "optimizer": "sgd", "device": "cpu", "arm": "up", "against": "baseline",
            "original": {"verdict": "no clear difference", "n_pairs": 12}, "replication": {"verdict": "slower",
                                                                                          "n_pairs": 12},
            "outcome": "did not hold"}
    assert replication_cells(line, "final_val_loss")[8] == "higher loss"
    assert replication_cells(line, "time_to_target")[8] == "slower"
