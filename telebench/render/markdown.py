"""report.md: environment, target, summary table with its legend, plots and plain-words verdicts per
case, teleport invariance, and trial statuses. Reads only a results dict, so any results.json re-renders."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from telebench.analysis.stats import MIN_PAIRS, VERDICT_RULE
from telebench.analysis.summary import STATUSES, GroupKey, group_key, higher_is_better, target_spec
from telebench.errors import UserError
from telebench.render import fmt
from telebench.render.load import ensure_summary
from telebench.render.plots import plot_group
from telebench.render.terminal import COLUMNS, summary_cells

Row = dict[str, Any]

LEGEND = (
    "**How to read this table.** *speedup* = baseline cost / arm cost, computed per seed on paired runs "
    "(same initial weights and batches), so values above 1 mean the arm reached the target sooner. "
    "*speedup time* uses training-clock seconds, teleport cost included; "
    "*speedup steps* uses optimizer steps. "
    "Shown: the median over seeds and, in brackets, a 95% percentile-bootstrap confidence interval "
    "(2000 resamples). A seed where the arm missed the target counts as speedup 0, one where the baseline "
    "missed as ∞; seeds where both missed are left out of the ratio. Misses are never dropped: *misses* "
    "counts them and the median time/steps treat them as infinite (*miss* when most seeds missed). "
    "*p (time)* is the two-sided Wilcoxon signed-rank p-value of the per-seed log-speedups "
    "(with n seeds it cannot go below 2/2ⁿ, e.g. 0.0625 for 5). "
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
        "## Environment",
        _environment_table(results.get("environment") or {}),
        "## Target",
        _target_section(rows, trials),
        "## Summary",
        _table(list(COLUMNS), [summary_cells(r) for r in rows]) if rows else "No finished trials.",
        LEGEND,
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
    """One plain-words sentence comparing an arm with its baseline, numbers included."""
    arm, optimizer = row["arm"], row["optimizer"]
    n = row.get("n_seeds", 0)
    if n == 0:
        return f"With {optimizer}, {arm} has no finished seeds ({row.get('skipped', 0)} skipped)."
    time_block = row.get("speedup_time") or {}
    median = fmt.num(time_block.get("median"))
    if base is None or median is None:
        return (
            f"With {optimizer}, {arm} could not be compared with a baseline "
            f"({n - row.get('misses', 0)}/{n} seeds reached the target)."
        )
    details = [f"95% CI {fmt.ci(time_block.get('ci_low'), time_block.get('ci_high'))}"]
    if time_block.get("p_value") is not None:
        details.append(f"p={fmt.p_value(time_block.get('p_value'))}")
    details.append(
        f"{n - row.get('misses', 0)}/{n} seeds reached the target, "
        f"baseline {base.get('n_seeds', 0) - base.get('misses', 0)}/{base.get('n_seeds', 0)}"
    )
    verdict = time_block.get("verdict")
    if verdict == "faster":
        claim = f"reached the target {fmt.ratio(median)} faster in training-clock time"
    else:
        details.insert(0, f"median speedup {fmt.ratio(median)}")
        if verdict == "slower" and median == 0:
            claim = "missed the target in most seeds where the baseline reached it"
        elif verdict == "slower":
            claim = (
                "was slower to the target in training-clock time, "
                f"taking {fmt.ratio(1 / median)} the baseline's time"
            )
        elif (time_block.get("n_pairs") or 0) < MIN_PAIRS:
            claim = "had too few informative seeds for a verdict in training-clock time"
            details.insert(
                1, f"only {time_block.get('n_pairs')} seed pairs where a verdict needs {MIN_PAIRS}"
            )
        else:
            claim = "showed no clear difference from the baseline in training-clock time"
    sentence = f"With {optimizer}, {arm} {claim} ({', '.join(details)})"
    steps_block = row.get("speedup_steps") or {}
    if steps_block.get("median") is not None:
        sentence += (
            f"; in steps: {steps_block.get('verdict')}, median {fmt.ratio(steps_block.get('median'))} "
            f"(95% CI {fmt.ci(steps_block.get('ci_low'), steps_block.get('ci_high'))})"
        )
    overhead = fmt.stat(row.get("teleport_overhead"))
    if overhead is not None:
        what = "optimizer resets" if row.get("arm_kind") == "reset-only" else "teleports"
        sentence += f"; {what} cost {fmt.percent(overhead)} of training time"
    both = time_block.get("both_missed") or 0
    if both:
        sentence += f"; {both} seed(s) where neither arm reached the target are left out of the ratio"
    return sentence + "."


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
    return f"Run {created}{source}; {len(results.get('trials') or [])} trials."


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
    """What 'reaching the target' means for each comparison, and the value it resolved to."""
    first: dict[GroupKey, dict[str, Any]] = {}
    for t in trials:
        first.setdefault(group_key(t), t)
    lines = [
        "Time-to-target is the training-clock time at the first evaluation (run off the clock) whose "
        "metric reaches the target; steps-to-target likewise. A trial that never reaches it, diverges "
        "or fails is a miss.\n"
    ]
    for key in dict.fromkeys((r["case"], r["optimizer"], r["device"]) for r in rows):
        row = next(r for r in rows if (r["case"], r["optimizer"], r["device"]) == key)
        spec: dict[str, Any] = target_spec(first[key]) if key in first else {"kind": "absolute", "slack": 0.0}
        metric = row.get("target_metric") or spec.get("metric", "train_loss")
        op = "≥" if higher_is_better(metric) else "≤"
        if spec["kind"] == "absolute":
            how = "absolute value from the suite"
        else:
            slack = float(spec.get("slack") or 0.0)
            how = f"median over the baseline's seeds of its final {metric}"
            if slack:
                factor = 1 - slack if op == "≥" else 1 + slack
                how += f", relaxed by {100 * slack:.3g}% (×{factor:.3g})"
        lines.append(
            f"- **{key[0]}**, {key[1]} on {key[2]}: "
            f"{metric} {op} {fmt.value(row.get('target_value'))} ({how})"
        )
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
            sentences = [f"- {verdict_sentence(r, base)}" for r in group if r is not base]
            if base is None:
                sentences.append("- No baseline arm ran here, so no speedups could be computed.")
            parts.append("\n".join(sentences) or "- Only the baseline ran here.")
    return parts


def _final_losses_section(rows: list[Row]) -> str:
    """Where each arm ended up (medians over seeds), and the paired change in validation loss."""
    if not rows:
        return ""
    header = ["case", "optimizer", "device", "arm", "train loss", "val loss", "val acc", "test loss", "test acc",
              "Δ val loss vs baseline [95% CI]", "p", "verdict"]
    body = []
    for r in rows:
        change = r.get("val_loss_change") or {}
        delta = "—"
        if change.get("median") is not None:
            low, high = fmt.value(change.get("ci_low")), fmt.value(change.get("ci_high"))
            delta = f"{fmt.value(change['median'])} [{low}, {high}]"
        body.append([
            r["case"], r["optimizer"], r["device"], r["arm"],
            fmt.value(fmt.stat(r.get("final_train_loss"))),
            fmt.value(fmt.stat(r.get("final_val_loss"))),
            fmt.value(fmt.stat(r.get("final_val_accuracy"))),
            fmt.value(fmt.stat(r.get("final_test_loss"))),
            fmt.value(fmt.stat(r.get("final_test_accuracy"))),
            delta,
            fmt.p_value(change.get("p_value")) if change else "—",
            change.get("verdict") or "—",
        ])
    legend = (
        "Medians over seeds at the end of each arm's budget (test columns only where the dataset has a test "
        "split). *Δ val loss* is the median over seeds of arm − baseline final validation loss, paired by "
        "seed, with a bootstrap 95% interval and a two-sided Wilcoxon signed-rank p; the last column says "
        "whether the arm ended *lower*, *higher* or with *no clear difference* (same rule as the speedups)."
    )
    return _table(header, body) + "\n\n" + legend


def _invariance_section(rows: list[Row]) -> str:
    tele = [r for r in rows if r.get("teleports")]
    if not tele:
        return "No teleports were recorded."
    table = _table(
        [
            "case",
            "optimizer",
            "device",
            "arm",
            "teleports",
            "rejected",
            "max rel. Δloss (teleport batch)",
            "max rel. Δloss (held-out)",
        ],
        [
            [
                r["case"],
                r["optimizer"],
                r["device"],
                r["arm"],
                str(r["teleports"]),
                str(r.get("teleports_rejected", 0)),
                fmt.sci(r.get("max_teleport_loss_change")),
                fmt.sci(r.get("max_teleport_held_out_loss_change")),
            ]
            for r in tele
        ],
    )
    return (
        "A teleport should leave the loss unchanged. This is the largest relative loss change "
        "|after − before| / |before| over each arm's accepted teleports, on the teleport batch and on "
        "held-out data; rejected teleports were rolled back bit for bit.\n\n" + table
    )


def _status_section(trials: list[dict[str, Any]]) -> str:
    counts: dict[str, dict[str, int]] = {}
    for t in trials:
        label = f"{t.get('case')} / {t.get('optimizer')} / {t.get('device')} / {t.get('arm')}"
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
        f"- {t.get('case')} / {t.get('optimizer')} / {t.get('arm')} / seed {t.get('seed')} "
        f"on {t.get('device')}: "
        f"**{t.get('status')}** — {_one_line(t.get('message')) or 'no message'}"
        for t in problems
    ]
    return table + "\n\nTrials that did not finish normally:\n\n" + "\n".join(lines)


def _write_plots(results: dict[str, Any], out_dir: Path) -> dict[GroupKey, str]:
    """One PNG per (case, optimizer, device), arms in summary order; returns paths relative to out_dir."""
    arms: dict[GroupKey, dict[str, list[dict[str, Any]]]] = {}
    for row in results.get("summary") or []:
        arms.setdefault((row["case"], row["optimizer"], row["device"]), {})[row["arm"]] = []
    for t in results.get("trials") or []:
        group = arms.setdefault(group_key(t), {})
        group.setdefault(str(t["arm"]), []).append(t)
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
        plot_group(
            by_arm, metric, fmt.num(target.get("value")), f"{key[0]} · {key[1]} · {key[2]}", out_dir / name
        )
        paths[key] = name
    return paths


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(_cell(c) for c in cells) + " |"

    right = {
        i
        for i, h in enumerate(header)
        if h not in ("case", "optimizer", "device", "arm", "verdict", "key", "value")
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
