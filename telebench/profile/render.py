"""The profile as tables: built once as plain rows, then printed with rich or written as markdown, so the
terminal and profile.md always say the same thing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from telebench.profile.breakdown import TELEPORT, UNATTRIBUTED
from telebench.profile.compiled import WHY_NOT_TELEPORT
from telebench.profile.memory import GRADIENT
from telebench.profile.run import CaseProfile, ProfileOptions

DASH = "—"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    image: str | None = None  # a plot shown under the table in markdown
    warnings: list[str] = field(default_factory=list)  # shown before the notes, in yellow / bold


# ---- numbers -------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def size(n: int | None) -> str:
    """Bytes in binary units with three significant figures: 409 KiB, 1.02 GiB."""
    if n is None:
        return DASH
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1000 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:.3g} {unit}" if abs(value) >= 1 else f"{value:.2f} {unit}"


def share(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f} %"


def number(x: float | None) -> str:
    return DASH if x is None else f"{x:.3g}"


def plain(value: Any) -> str:
    """A value as a reader writes it, never a Python repr: lists joined by commas, mappings as
    "key: value", booleans as yes / no, nothing as a dash."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {plain(v)}" for k, v in value.items()) or DASH
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(plain(v) for v in value) or DASH
    return str(value)


# ---- tables ----------------------------------------------------------------------------------------
def case_tables(case: CaseProfile, options: ProfileOptions) -> list[Table]:
    tables = [_cost_table(case, options)]
    if case.breakdown is not None:
        tables += [_phase_table(case), *_op_tables(case)]
    tables.append(_memory_table(case))
    if case.work is not None:
        tables.append(_work_table(case))
    if case.compiled:
        tables.append(_compile_table(case))
    tables += [_sweep_table(case, i) for i in range(len(case.sweeps))]
    return tables


def _cost_table(case: CaseProfile, options: ProfileOptions) -> Table:
    t, subject, rec = case.timings, case.subject, case.record
    tp = subject.teleport
    rows = [
        [
            "teleport",
            duration(t.teleport.median),
            duration(t.teleport.min),
            f"one {tp.steps}-step {tp.group} teleport, batch {tp.batch_size}, no profiler",
        ],
        [
            "gradient evaluation",
            duration(t.gradient.median),
            duration(t.gradient.min),
            f"forward+backward on the same batch ({t.gradient.calls} calls per sample)",
        ],
        [
            "training step",
            duration(t.train_step.median),
            duration(t.train_step.min),
            f"forward+backward+{subject.optimizer.name} step, batch {subject.train_batch}",
        ],
        [
            "teleport in gradient evaluations",
            number(t.grad_evals("median")),
            number(t.grad_evals("min")),
            "teleport time / gradient-evaluation time",
        ],
        [
            "break-even (training steps)",
            number(t.break_even("median")),
            number(t.break_even("min")),
            "steps a teleport must save to pay for itself",
        ],
    ]
    if case.profiled_teleport_s is not None:
        rows.insert(
            1,
            [
                "teleport under the profiler",
                duration(case.profiled_teleport_s),
                duration(min(case.breakdown.per_teleport_s)) if case.breakdown else DASH,
                f"profiler overhead ×{number(case.profiler_overhead)} (median / median)",
            ],
        )
    verdict = "accepted" if rec["accepted"] else "rejected (weights restored)"
    notes = [
        f"{options.repeat} samples after {options.warmup} warm-up rounds; "
        "'fastest' is the least disturbed sample.",
        f"The teleport was {verdict}: relative loss change {rec['relative_loss_change']:.2e} "
        f"(tolerance {rec['tolerance']:.0e}), "
        f"objective {rec['objective_before']:.4g} → {rec['objective_after']:.4g} "
        f"in {rec['steps_taken']} steps.",
    ]
    return Table(
        f"Cost of one teleport — {case.subject.name}", ["measure", "median", "fastest", "what"], rows, notes,
        warnings=noise_warnings(case.noisy()),
    )


def noise_warnings(noisy: dict[str, float]) -> list[str]:
    """One sentence naming the timings whose median sample is over NOISE_RATIO times their fastest."""
    if not noisy:
        return []
    which = ", ".join(f"{name} (median {ratio:.1f}× the fastest)" for name, ratio in noisy.items())
    return [
        f"Noisy timings: {which}. The machine was busy while measuring, so these times and the ratios "
        "built on them may be off by as much; rerun on an idle machine or with a larger --repeat, and "
        "trust neither column alone."
    ]


def _phase_table(case: CaseProfile) -> Table:
    b = case.breakdown
    assert b is not None
    on_device = case.subject.device.startswith("cuda")
    header = ["phase", "calls", "host time", "share"]
    if on_device:
        header += ["device time", "device share"]
    header.append("peak extra memory")
    rows = []
    for p in b.phases:
        row = [p.label, f"{p.calls:g}", duration(p.cpu_s), share(p.cpu_share)]
        if on_device:
            row += [duration(p.device_s), share(p.device_share)]
        row.append(size(case.memory.peak(p.label)) if p.label != UNATTRIBUTED else DASH)
        rows.append(row)
    total = ["teleport (total)", "1", duration(b.teleport_s), share(1.0)]
    if on_device:
        total += [duration(b.teleport_device_s), share(1.0)]
    total.append(size(case.memory.peak(TELEPORT)))
    rows.append(total)
    notes = [
        f"Per teleport, mean over {b.teleports} profiled teleports. "
        "A phase's time excludes phases nested in it; "
        f"'{UNATTRIBUTED}' is time inside the teleport that no phase label covers (set-up and the record).",
        f"Labelled phases cover {share(b.coverage)} of a teleport's time (median over the teleports).",
    ]
    if on_device:
        notes.append(
            "Host time is launch time plus waits at synchronisations; device time is the kernels' own."
        )
    return Table("Phases", header, rows, notes)


def _op_tables(case: CaseProfile) -> list[Table]:
    b = case.breakdown
    assert b is not None
    note = "Per teleport; an operator's self time excludes the operators it called."
    if not b.ops_by_device:
        rows = [[o.name, f"{o.calls:g}", duration(o.self_cpu_s)] for o in b.ops_by_cpu]
        return [
            Table(
                "Top operators by self host time",
                ["operator", "calls / teleport", "self host time"],
                rows,
                [note],
            )
        ]
    by_cpu = [
        [o.name, f"{o.calls:g}", duration(o.self_cpu_s), duration(o.self_device_s)] for o in b.ops_by_cpu
    ]
    by_device = [
        [o.name, f"{o.calls:g}", duration(o.self_device_s), duration(o.self_cpu_s)] for o in b.ops_by_device
    ]
    return [
        Table(
            "Top operators by self host time",
            ["operator", "calls / teleport", "self host time", "self device time"],
            by_cpu,
            [note],
        ),
        Table(
            "Top operators by self device time",
            ["operator", "calls / teleport", "self device time", "self host time"],
            by_device,
            [note],
        ),
    ]


def _memory_table(case: CaseProfile) -> Table:
    m = case.memory
    rows = []
    if m.phases:
        rows += [
            [
                "teleport, peak extra (profiler)",
                size(m.peak(TELEPORT)),
                "above what was allocated when it began",
            ],
            [
                "gradient evaluation, peak extra (profiler)",
                size(m.peak(GRADIENT)),
                "the same for forward+backward",
            ],
        ]
    if m.cuda_max_allocated is not None:
        extra = m.cuda_max_allocated - (m.cuda_allocated_before or 0)
        rows += [
            ["CUDA allocated before the teleport", size(m.cuda_allocated_before), "model, data, batches"],
            [
                "CUDA peak allocated during the teleport",
                size(m.cuda_max_allocated),
                f"{size(extra)} above before",
            ],
            [
                "CUDA peak reserved during the teleport",
                size(m.cuda_max_reserved),
                "the caching allocator's pool",
            ],
            ["CUDA peak allocated, gradient evaluation", size(m.cuda_gradient_max_allocated), ""],
        ]
    rows.append(["process peak RSS", size(m.peak_rss_bytes), "high-water mark of the whole process"])
    return Table(f"Memory ({m.device})", ["measure", "value", "note"], rows)


def _work_table(case: CaseProfile) -> Table:
    """Operator calls and matrix-product flops, teleport against gradient evaluation (profile/counts.py)."""
    work = case.work
    assert work is not None
    t, g = work.teleport, work.gradient
    rows = [
        ["operator calls", f"{t.calls:,}", f"{g.calls:,}", number(work.call_ratio)],
        ["views (transposes, slices)", f"{t.views:,}", f"{g.views:,}", DASH],
        ["matrix-product GFLOP", f"{t.flops / 1e9:.3g}", f"{g.flops / 1e9:.3g}", number(work.flop_ratio)],
    ]
    measured = case.timings.grad_evals("min")
    notes = [
        "Counted, not timed: every torch operator call, and the floating-point operations of matrix products "
        "(not QR, Cholesky or triangular solves).",
        f"The teleport cost {number(measured)} gradient evaluations (fastest). Where both sides run at the "
        f"matrix product's speed its floor is the flop ratio, {number(work.flop_ratio)}; on one CPU thread a small "
        "product costs its call whatever its arithmetic, so a call ratio far above the measured cost means "
        "the teleport is bound by calls, not arithmetic.",
    ]
    return Table(f"What one teleport does — {case.subject.name}", ["work", "teleport", "gradient evaluation",
                                                                  "teleport / gradient"], rows, notes)


def _compile_table(case: CaseProfile) -> Table:
    rows = [
        [
            r.name,
            duration(r.eager_s),
            duration(r.compiled_s),
            number(r.speedup),
            duration(r.compile_s),
            r.status if not r.message else f"{r.status}: {r.message}",
        ]
        for r in case.compiled
    ]
    return Table(
        "torch.compile",
        ["part", "eager", "compiled", "speed-up", "compile time", "status"],
        rows,
        [WHY_NOT_TELEPORT[0].upper() + WHY_NOT_TELEPORT[1:] + "."],
    )


def _sweep_table(case: CaseProfile, index: int) -> Table:
    s = case.sweeps[index]
    rows = [
        [
            str(p.value),
            duration(p.teleport_s),
            duration(p.gradient_s),
            duration(p.train_step_s),
            number(p.grad_evals),
        ]
        for p in s.points
    ]
    fits = s.fits
    rows.append(
        [
            "exponent k",
            *(
                f"{fits[k].exponent:.2f} (r² {fits[k].r2:.2f})"
                for k in ("teleport", "gradient", "train_step")
            ),
            DASH,
        ]
    )
    notes = [f"Fastest sample per point; time ∝ {s.axis}^k fitted on a log-log scale."]
    header = [s.axis, "teleport", "gradient evaluation", "training step", "teleport in gradient evaluations"]
    return Table(f"Scaling with {s.axis}", header, rows, notes, s.plot)


# ---- output ----------------------------------------------------------------------------------------
def print_tables(cases: Iterable[CaseProfile], options: ProfileOptions, console: Console) -> None:
    for case in cases:
        console.rule(escape(case.subject.name))
        console.print(escape(case.subject.description), highlight=False)
        for table in case_tables(case, options):
            rich = RichTable(title=escape(table.title), title_justify="left")
            for i, head in enumerate(table.header):
                rich.add_column(
                    escape(head), justify="left" if i == 0 or head in ("what", "note", "status") else "right"
                )
            for row in table.rows:
                rich.add_row(*(escape(c) for c in row))
            console.print(rich)
            for warning in table.warnings:
                console.print(f"  [bold yellow]warning:[/] {escape(warning)}", highlight=False)
            for note in table.notes:
                console.print(f"  [dim]{escape(note)}[/]", highlight=False)


def markdown(env: dict[str, Any], options: ProfileOptions, cases: list[CaseProfile]) -> str:
    how = (
        f"{options.warmup} warm-up rounds, {options.repeat} measured teleports, profiler "
        f"{'on' if options.profiler else 'off (--no-trace)'}, torch.compile "
        f"{options.compile_backend if options.compile else 'off'}"
        + (f", sweeps {', '.join(s.spec for s in options.sweeps)}" if options.sweeps else "")
        + "."
    )
    lines = [
        "# Teleport profile",
        "",
        how,
        "",
        "## Environment",
        "",
        _markdown_table(["key", "value"], [[k.replace("_", " "), plain(v)] for k, v in env.items() if v is not None]),
        "",
    ]
    for case in cases:
        lines += [f"## {case.subject.name}", "", case.subject.description, ""]
        if case.trace:
            lines += [
                f"Chrome trace: [`{case.trace}`]({case.trace}) (open in https://ui.perfetto.dev or "
                "chrome://tracing).",
                "",
            ]
        for table in case_tables(case, options):
            lines += [f"### {table.title}", "", _markdown_table(table.header, table.rows), ""]
            lines += [f"**Warning:** {warning}  " for warning in table.warnings]
            lines += [f"{note}  " for note in table.notes]
            lines.append("")
            if table.image:
                lines += [f"![{table.title}]({table.image})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---" if h in ("what", "note", "status", "value") else "---:" for h in header[1:]]
    return "\n".join([line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows)])
