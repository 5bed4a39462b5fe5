"""report.md: environment, target, summary table with its legend, plots and plain-words verdicts per
case, teleport invariance, and trial statuses. Reads only a results dict, so any results.json re-renders."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from telebench.analysis.censored import INTERVAL_NAME, TEST_NAME
from telebench.analysis.stats import VERDICT_RULE
from telebench.analysis.summary import (
    STATUSES,
    GroupKey,
    group_key,
    higher_is_better,
    is_calibration,
    target_spec,
)
from telebench.analysis.verdicts import CORRECTION_NAME, min_pairs_for
from telebench.errors import UserError
from telebench.render import fmt
from telebench.render.load import ensure_summary
from telebench.render.methods import methods_section, primary_line
from telebench.render.plots import plot_group
from telebench.render.preregistered import exploratory_rows, family_tag, markdown_sections, summary_heading
from telebench.render.terminal import COLUMNS, summary_cells
from telebench.render.tuning import tuning_section

Row = dict[str, Any]

LEGEND = (
    "**How to read this table.** *speedup* = baseline cost / arm cost, computed per seed on paired runs "
    "(same initial weights and batches), so values above 1 mean the arm reached the target sooner. "
    "*speedup time* uses training-clock seconds, teleport cost included; *speedup steps* uses optimizer "
    "steps. Shown: the median over seeds and, in brackets, the distribution-free "
    f"{INTERVAL_NAME} (from the seeds' order statistics); *CI level* is the level that interval really "
    "reaches with this many seeds (93.75% with 5, 87.5% with 4; below 80% it is just the range of the "
    "seeds and is called a range). A trial that misses the target is right-censored at its budget: its "
    "cost is only known to exceed what it spent, so it is never dropped and never counted as ∞; where a "
    "median is only bounded it is shown as a bound (\"≥ 1.28×\"). Seeds where neither arm reached the "
    "target carry no information about the ratio and are left out. *misses* counts misses per arm. "
    f"*p* is the {TEST_NAME} on the primary metric (seeds whose sign is known, ties dropped; with n "
    f"such seeds it cannot go below 2/2ⁿ), raw and after {CORRECTION_NAME} correction over the "
    "report's comparisons. *seeds for 10%*: how many seeds this comparison's spread needs to detect a 10% "
    "effect with 80% power (alone / among the report's comparisons). "
    f"Verdict rule: {VERDICT_RULE}. "
    "*overhead* is the median share of the training clock spent teleporting; *max teleport Δloss* the "
    "largest relative loss change of an accepted teleport on its own batch."
)


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write out_dir/report.md and its PNG plots (out_dir/plots/); return the report's path."""
    results = ensure_summary(results)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = _write_plots(results, out_dir)
        path = out_dir / "report.md"
        path.write_text(render_markdown(results, plots), encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"Cannot write the report to {out_dir} ({exc.strerror or exc}); "
            "pass a writable folder with --out."
        ) from exc
    return path


def render_markdown(results: dict[str, Any], plots: dict[GroupKey, str]) -> str:
    """The report text; `plots` maps each (case, optimizer, device) to its PNG path relative to report.md."""
    rows: list[Row] = results.get("summary") or []
    trials: list[dict[str, Any]] = results.get("trials") or []
    parts = [
        f"# telebench report: {results.get('suite', '?')} ({_date(results)})",
        _header_line(results),
        str(results.get("description") or "").strip(),
        *_notes(results, trials),
        *markdown_sections(results, _table),  # the pre-registered comparisons first, where the suite declared them
        "## Environment",
        _environment_table(results.get("environment") or {}),
        "## Target",
        _target_section(rows, trials),
        *tuning_section(results),
        *summary_heading(results),
        primary_line(results),
        _table(list(COLUMNS), [summary_cells(r) for r in exploratory_rows(rows)]) if rows else "No finished trials.",
        LEGEND,
        "## Methods",
        methods_section(results),
        "## Final losses",
        _final_losses_section(rows),
        *_case_sections(rows, plots),
        "## Teleport invariance",
        _invariance_section(rows),
        "## Trial status",
        _status_section(trials),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def verdict_sentence(row: Row, base: Row | None) -> str:
    """One plain-words sentence comparing an arm with its baseline, numbers and methods included."""
    arm, optimizer = row["arm"], row["optimizer"]
    n = row.get("n_seeds", 0)
    if n == 0:
        return f"With {optimizer}, {arm} has no finished seeds ({row.get('skipped', 0)} skipped)."
    reached = (f"{n - row.get('misses', 0)}/{n} seeds reached the target, baseline "
               f"{(base or {}).get('n_seeds', 0) - (base or {}).get('misses', 0)}/{(base or {}).get('n_seeds', 0)}")
    if base is None or not row.get("primary_metric"):
        return f"With {optimizer}, {arm} could not be compared with a baseline ({reached})."
    claim, details = _claim(row)
    sentence = f"With {optimizer}, {arm} {claim} ({', '.join([*details, reached])})"
    steps = row.get("speedup_steps") or {}
    if row.get("primary_metric") != "steps_to_target" and steps.get("n_pairs"):
        sentence += (f"; in steps: {steps.get('verdict')}, median {fmt.median_ratio(steps)} "
                     f"({fmt.interval_name(steps)} {fmt.ci(steps.get('ci_low'), steps.get('ci_high'))})")
    effects = [f"{name} {fmt.median_difference(block)} ({fmt.median_percent(block.get('relative'))})"
               for name, block in (("training", row.get("train_loss_change")),
                                   ("validation", row.get("val_loss_change"))) if block and block.get("n_pairs")]
    if effects:
        sentence += "; final loss, arm − baseline: " + ", ".join(effects)
    overhead = fmt.stat(row.get("teleport_overhead"))
    if overhead is not None:
        what = {"reset-only": "optimizer resets", "lr-bump": "factor measurements"}.get(str(row.get("arm_kind")), "teleports")
        sentence += f"; {what} cost {fmt.percent(overhead)} of training time"
    both = (row.get("speedup_time") or {}).get("both_missed") or 0
    if both:
        sentence += f"; {both} seed(s) where neither arm reached the target are left out of the ratio"
    if row.get("seeds_needed") is not None and row.get("verdict") != "identical":
        sentence += (f"; to detect a 10% effect its spread needs about {row['seeds_needed']} seeds "
                     f"({row.get('seeds_needed_holm')} among this report's {row.get('holm_m')} comparisons)")
    return sentence + "."


def _claim(row: Row) -> tuple[str, list[str]]:
    """The verdict in words, and the numbers behind it."""
    verdict, metric = row.get("verdict"), str(row.get("primary_metric"))
    cost = metric in ("time_to_target", "steps_to_target")
    where = "in training-clock time" if metric == "time_to_target" else (
        "in steps" if cost else f"by {fmt.metric_name(metric)}")
    size = fmt.median_ratio(row) if cost else f"{fmt.median_difference(row)} (arm − baseline)"
    interval = (fmt.ci(row.get("ci_low"), row.get("ci_high")) if cost
                else f"{fmt.signed(row.get('ci_low'))} to {fmt.signed(row.get('ci_high'))}")
    details = [f"{fmt.interval_name(row)} {interval}"]
    if row.get("p_value") is not None:
        details.append(f"sign test p={fmt.p_value(row.get('p_value'))}, Holm-adjusted "
                       f"{fmt.p_value(row.get('p_adjusted'))} over {row.get('holm_m')} comparisons")
    details.append(f"{row.get('n_pairs')} paired seeds")
    if verdict == "identical":
        return (f"was identical to the baseline: every evaluation of every paired seed matched bit for bit, so "
                f"the control did nothing ({row.get('noop_reason')}) and its timings differ by clock noise only",
                details[-1:])
    if verdict == "too few seeds":
        informative, needed = row.get("n_informative") or 0, row.get("min_pairs") or min_pairs_for()
        why = [f"{row.get(k)} {what}" for k, what in (("ties", "tied"), ("unknown_sign", "with an unknown sign"))
               if row.get(k)]
        details.insert(0, f"only {informative} informative seed pairs where a verdict needs {needed}"
                          + (f" ({' and '.join(why)})" if why else ""))
        details.insert(0, f"median {size}")
        return f"had too few informative seeds for a verdict {where}", details
    if verdict == "faster":
        return (f"reached the target {size} faster {where}" if cost else f"was faster: lower {where[3:]}, "
                f"median {size}"), details
    if verdict == "slower":
        return (f"was slower to the target {where}, median speedup {size}" if cost
                else f"was slower: higher {where[3:]}, median {size}"), details
    details.insert(0, f"median {'speedup ' if cost else ''}{size}")
    return f"showed no clear difference from the baseline {where}", details


def _date(results: dict[str, Any], pattern: str = "%Y-%m-%d") -> str:
    created = str(results.get("created") or "")
    try:
        return datetime.fromisoformat(created).strftime(pattern).strip()
    except ValueError:
        return created or "unknown date"


def _header_line(results: dict[str, Any]) -> str:
    created = _date(results, "%Y-%m-%d %H:%M %Z")
    suite_path = results.get("suite_path")
    source = f" from `{suite_path}`" if suite_path else ""
    trials = len(results.get("trials") or [])
    tuned = [r for r in results.get("tuning") or [] if r.get("complete")]
    only_tuning = f" (only the tuning stage ran: {len(tuned)} optimizer(s) tuned, below)" if not trials and tuned else ""
    return f"Run {created}{source}; {trials} trials{only_tuning}."


def _notes(results: dict[str, Any], trials: list[dict[str, Any]]) -> list[str]:
    """Warnings a reader must see before the numbers."""
    notes = []
    if results.get("partial"):
        notes.append(
            "> **Partial results.** The run was interrupted before its plan finished; only the "
            f"{len(trials)} finished trials are reported. Rerun with the same `--out` to complete it."
        )
    shared = sum(bool((t.get("timing") or {}).get("shared_device")) for t in trials)
    if shared:
        notes.append(
            f"> **Shared device.** {shared} trial(s) were timed while another timed trial used the same "
            "device, so their training-clock times are inflated and time comparisons are unreliable; "
            "step counts are unaffected."
        )
    hosts: dict[GroupKey, set[str]] = {}
    for t in trials:
        if t.get("host"):
            hosts.setdefault(group_key(t), set()).add(str(t["host"]))
    mixed = [f"{c}/{o}/{d} ({', '.join(sorted(h))})" for (c, o, d), h in hosts.items() if len(h) > 1]
    if mixed:
        notes.append(
            "> **Different machines.** The arms of " + "; ".join(mixed) + " ran on different hosts, "
            "so their times are not strictly comparable."
        )
    return notes


def _environment_table(env: dict[str, Any]) -> str:
    if not env:
        return "Not recorded."
    rows = []
    for key, val in env.items():
        if isinstance(val, dict):
            val = ", ".join(f"{k}: {v}" for k, v in val.items()) or fmt.DASH
        elif isinstance(val, (list, tuple)):
            val = ", ".join(map(str, val)) or fmt.DASH
        rows.append([key, fmt.DASH if val is None else str(val)])
    return _table(["key", "value"], rows)


def _target_section(rows: list[Row], trials: list[dict[str, Any]]) -> str:
    """What 'reaching the target' means for each comparison, the value it resolved to, and its source."""
    first: dict[GroupKey, dict[str, Any]] = {}
    for t in trials:
        if not is_calibration(t):
            first.setdefault(group_key(t), t)
    lines = [
        "Time-to-target is the training-clock time at the first evaluation (run off the clock) whose "
        "metric reaches the target; steps-to-target likewise. A trial that never reaches it, diverges "
        "or fails is a miss, censored at what it spent.\n"
    ]
    for key in dict.fromkeys((r["case"], r["optimizer"], r["device"]) for r in rows):
        row = next(r for r in rows if (r["case"], r["optimizer"], r["device"]) == key)
        spec: dict[str, Any] = target_spec(first[key]) if key in first else {"kind": "absolute", "slack": 0.0}
        resolved = (first.get(key) or {}).get("target") or {}
        metric = row.get("target_metric") or spec.get("metric", "train_loss")
        op = "≥" if higher_is_better(metric) else "≤"
        if spec["kind"] == "absolute":
            how = "absolute value from the suite"
        else:
            slack = float(spec.get("slack") or 0.0)
            seeds = resolved.get("calibration_seeds") or []
            if resolved.get("peeked") is False:
                how = (f"median final {metric} of the baseline on {len(seeds)} calibration seed(s) "
                       f"({', '.join(map(str, seeds))}), which are never compared")
            else:
                how = (f"median over the compared baseline seeds of its final {metric}; **peeked**: "
                       "this target comes from the seeds it then judges, as the run has no calibration seeds")
            if slack:
                factor = 1 - slack if op == "≥" else 1 + slack
                how += f", relaxed by {100 * slack:.3g}% (×{factor:.3g})"
        lines.append(f"- **{key[0]}**, {key[1]} on {key[2]}: {metric} {op} {fmt.value(row.get('target_value'))} ({how})")
    return "\n".join(lines)


def _case_sections(rows: list[Row], plots: dict[GroupKey, str]) -> list[str]:
    """Per case: the plot and one verdict sentence per arm for each optimizer and device."""
    parts: list[str] = []
    for case in dict.fromkeys(r["case"] for r in rows):
        parts.append(f"## Case: {case}")
        case_rows = [r for r in rows if r["case"] == case]
        for key in dict.fromkeys((r["case"], r["optimizer"], r["device"]) for r in case_rows):
            group = [r for r in case_rows if (r["case"], r["optimizer"], r["device"]) == key]
            base = next((r for r in group if r["arm"] == r.get("baseline_arm")), None)
            parts.append(f"### {key[1]} on {key[2]}")
            if key in plots:
                parts.append(
                    f"![{case}, {key[1]} on {key[2]}: target metric against step and training clock]"
                    f"({plots[key]})"
                )
            sentences = [f"- {family_tag(r)}{verdict_sentence(r, base)}" for r in group if r is not base]
            if base is None:
                sentences.append("- No baseline arm ran here, so no speedups could be computed.")
            parts.append("\n".join(sentences) or "- Only the baseline ran here.")
    return parts


def _final_losses_section(rows: list[Row]) -> str:
    """Where each arm ended up (medians over seeds), and the paired effect sizes in loss."""
    if not rows:
        return ""
    header = ["case", "optimizer", "device", "arm", "train loss", "val loss", "val acc", "test loss", "test acc",
              "Δ train loss [CI]", "Δ train loss %", "Δ val loss vs baseline [CI]", "Δ val loss %",
              "Δ AUC log train loss [CI]", "CI level", "p val (raw → Holm)", "verdict"]
    body = []
    for r in rows:
        train, val, auc = (r.get(k) or {} for k in ("train_loss_change", "val_loss_change", "auc_change"))
        body.append([
            r["case"], r["optimizer"], r["device"], r["arm"],
            *(fmt.value(fmt.stat(r.get(k))) for k in ("final_train_loss", "final_val_loss", "final_val_accuracy",
                                                       "final_test_loss", "final_test_accuracy")),
            fmt.difference(train), fmt.relative(train.get("relative")),
            fmt.difference(val), fmt.relative(val.get("relative")), fmt.difference(auc),
            fmt.interval_name(val).removesuffix(" CI"),
            fmt.p_pair(val.get("p_value"), val.get("p_adjusted")), val.get("verdict") or fmt.DASH,
        ])
    legend = (
        "Medians over seeds at the end of each arm's budget (test columns only where the dataset has a test "
        "split). The *Δ* columns are effect sizes, paired by seed: the median over seeds of arm − baseline, "
        "absolute and relative to the baseline's value, in brackets the order-statistic interval at the "
        "level shown (a range below 80%); *AUC* is the mean log training loss along the run (lower: the "
        f"loss fell sooner). *p val* is the {TEST_NAME} on the final validation loss, raw and "
        f"{CORRECTION_NAME}-adjusted over this table's rows; the last column says whether the arm ended "
        "*lower*, *higher*, with *no clear difference*, *identical*, or had *too few seeds* to tell."
    )
    return _table(header, body) + "\n\n" + legend


def _invariance_section(rows: list[Row]) -> str:
    tele = [r for r in rows if r.get("teleports")]
    if not tele:
        return "No teleports were recorded."
    header = ["case", "optimizer", "device", "arm", "teleports", "rejected", "max rel. Δloss (teleport batch)",
              "max rel. Δloss (held-out)"]
    table = _table(header, [
        [r["case"], r["optimizer"], r["device"], r["arm"], str(r["teleports"]), str(r.get("teleports_rejected", 0)),
         fmt.sci(r.get("max_teleport_loss_change")), fmt.sci(r.get("max_teleport_held_out_loss_change"))]
        for r in tele
    ])
    return (
        "A teleport should leave the loss unchanged. This is the largest relative loss change "
        "|after − before| / |before| over each arm's accepted teleports, on the teleport batch and on "
        "held-out data; rejected teleports were rolled back bit for bit.\n\n" + table
    )


def _status_section(trials: list[dict[str, Any]]) -> str:
    counts: dict[str, dict[str, int]] = {}
    for t in trials:
        label = f"{t.get('case')} / {t.get('optimizer')} / {t.get('device')} / {_arm_label(t)}"
        bucket = counts.setdefault(label, dict.fromkeys(STATUSES, 0))
        status = t.get("status", "error")
        bucket[status if status in bucket else "error"] += 1
    if not counts:
        return "No trials."
    table = _table(
        ["case / optimizer / device / arm", *STATUSES],
        [[label, *(str(c[s]) for s in STATUSES)] for label, c in counts.items()],
    )
    problems = [t for t in trials if t.get("status") != "ok"]
    if not problems:
        return table + "\n\nEvery trial finished normally."
    lines = [
        f"- {t.get('case')} / {t.get('optimizer')} / {_arm_label(t)} / seed {t.get('seed')} on {t.get('device')}: "
        f"**{t.get('status')}** — {_one_line(t.get('message')) or 'no message'}"
        for t in problems
    ]
    return table + "\n\nTrials that did not finish normally:\n\n" + "\n".join(lines)


def _arm_label(trial: dict[str, Any]) -> str:
    return f"{trial.get('arm')} (calibration)" if is_calibration(trial) else str(trial.get("arm"))


def _write_plots(results: dict[str, Any], out_dir: Path) -> dict[GroupKey, str]:
    """One PNG per (case, optimizer, device), arms in summary order (calibration runs are not drawn);
    returns paths relative to out_dir."""
    arms: dict[GroupKey, dict[str, list[dict[str, Any]]]] = {}
    for row in results.get("summary") or []:
        arms.setdefault((row["case"], row["optimizer"], row["device"]), {})[row["arm"]] = []
    for t in results.get("trials") or []:
        if not is_calibration(t):
            arms.setdefault(group_key(t), {}).setdefault(str(t["arm"]), []).append(t)
    paths: dict[GroupKey, str] = {}
    for key, by_arm in arms.items():
        name = f"plots/{_slug('-'.join(key))}.png"
        while name in paths.values():  # two keys that slug alike must not overwrite each other
            name = name.removesuffix(".png") + "-2.png"
        sample = next((t for ts in by_arm.values() for t in ts), None)
        if sample is None:
            continue
        target = sample.get("target") or {}
        metric = target.get("metric") or target_spec(sample)["metric"]
        plot_group(by_arm, metric, fmt.num(target.get("value")), f"{key[0]} · {key[1]} · {key[2]}", out_dir / name)
        paths[key] = name
    return paths


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(_cell(c) for c in cells) + " |"

    right = {
        i
        for i, h in enumerate(header)
        if h not in ("case", "optimizer", "device", "arm", "against", "verdict", "key", "value")
        and not h.startswith("case /")
    }
    sep = "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _cell(text: Any) -> str:
    return _one_line(str(text)).replace("|", "\\|")


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plot"
