"""`telebench profile`: check every input, profile each subject, then write and print the report.

Outputs in the output folder: profile.md (tables and plots), profile.json (every figure, with the
environment), trace.json (the Chrome trace of the profiled teleports, unless --no-trace) and a PNG per
sweep. With several suite cases, each case's trace and plots go in a sub-folder named after it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from telebench.profile.env import profile_environment
from telebench.profile.render import markdown, print_tables
from telebench.profile.run import CaseProfile, ProfileOptions, profile_subject
from telebench.profile.subject import (
    ProfileSubject,
    SubjectOptions,
    check_subject,
    subject_from_options,
    subjects_from_suite,
)
from telebench.profile.sweep import point_subject
from telebench.results.store import atomic_write_text, dumps, now_iso, prepare_out_dir

SCHEMA = "telebench.profile/1"
# torch intra-op threads when --threads is not given: what `telebench run` uses for train suites, so a
# profile measures the same work the runs do, and steadily (more threads on a busy machine made the
# small operations several times slower and their samples scatter).
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class SuiteSource:
    """Profile the cases of a suite: ``case`` picks one, ``device`` replaces the cases' devices."""

    path: str
    case: str | None = None
    device: str | None = None


def default_out_dir() -> Path:
    return Path("reports") / f"profile-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resolve_subjects(source: SuiteSource | SubjectOptions, options: ProfileOptions) -> list[ProfileSubject]:
    """The subjects to profile, each checked together with every point of every sweep."""
    batches = tuple(v for s in options.sweeps if s.axis == "batch" for v in s.values)
    if isinstance(source, SuiteSource):
        subjects = subjects_from_suite(source.path, source.case, source.device)
    else:
        subjects = [subject_from_options(source, largest_batch=max(batches, default=0))]
    for subject in subjects:
        check_subject(subject, batches=batches)
        for sweep in options.sweeps:
            for value in sweep.values:
                if sweep.axis != "batch":
                    check_subject(point_subject(subject, sweep.axis, value))
    return subjects


def run_profile(
    source: SuiteSource | SubjectOptions,
    options: ProfileOptions,
    out: Path | None = None,
    threads: int | None = None,
    console: Console | None = None,
) -> Path:
    """Profile every subject of ``source`` on ``threads`` torch threads (default DEFAULT_THREADS; the
    caller's count is restored after); returns the output folder."""
    console = console or Console()
    if not torch.cuda.is_available():
        os.environ.setdefault(
            "KINETO_LOG_LEVEL", "5"
        )  # silences kineto's "no GPU" error line on CPU machines
    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else DEFAULT_THREADS)
    try:
        return _profile_all(source, options, out, console)
    finally:
        torch.set_num_threads(before)


def _profile_all(source: SuiteSource | SubjectOptions, options: ProfileOptions, out: Path | None,
                 console: Console) -> Path:
    subjects = resolve_subjects(source, options)
    out_dir = out or default_out_dir()
    prepare_out_dir(out_dir)
    cases: list[CaseProfile] = []
    for subject in subjects:
        subdir = _slug(subject.name) if len(subjects) > 1 else ""
        with console.status(f"profiling {escape(subject.name)}") as status:

            def report(msg: str, name: str = subject.name) -> None:
                status.update(f"{escape(name)}: {escape(msg)}")

            cases.append(profile_subject(subject, options, out_dir, subdir, progress=report))
    device = torch.device("cuda" if any(t.device.startswith("cuda") for t in subjects) else "cpu")
    env = profile_environment(device)
    atomic_write_text(out_dir / "profile.json", dumps(_document(env, options, cases), indent=2) + "\n")
    atomic_write_text(out_dir / "profile.md", markdown(env, options, cases))
    print_tables(cases, options, console)
    console.print(f"report: {out_dir / 'profile.md'}", highlight=False)
    return out_dir


def _document(env: dict[str, Any], options: ProfileOptions, cases: list[CaseProfile]) -> dict[str, Any]:
    opts = asdict(options) | {"sweeps": [s.spec for s in options.sweeps]}
    return {
        "schema": SCHEMA,
        "created": now_iso(),
        "environment": env,
        "options": opts,
        "cases": [c.to_dict() for c in cases],
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "case"
