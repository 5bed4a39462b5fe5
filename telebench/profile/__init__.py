"""`telebench profile`: where a teleport's time and memory go, and how its cost grows.

Modules, one job each: ``subject`` (what to profile, from a suite or options, checked up front),
``workload`` (the live model, batches and the three timed operations), ``timing`` (plain timings,
no profiler), ``breakdown`` (phases and operators under torch.profiler), ``memory`` (peak memory per
phase), ``sweep`` (scaling and the fitted exponent), ``compiled`` (torch.compile), ``plot``,
``render`` (terminal and markdown tables), ``run`` (one subject end to end) and ``command`` (the CLI).

    from telebench.profile import SubjectOptions, ProfileOptions, run_profile
    run_profile(SubjectOptions(model="784-16-10-10", group="gl-data"), ProfileOptions(), out=Path("out"))
"""

from telebench.profile.breakdown import TELEPORT, Breakdown, profile_teleports
from telebench.profile.command import DEFAULT_THREADS, SuiteSource, run_profile
from telebench.profile.run import CaseProfile, ProfileOptions, profile_subject
from telebench.profile.subject import (
    ProfileSubject,
    SubjectOptions,
    subject_from_options,
    subjects_from_suite,
)
from telebench.profile.sweep import Sweep, fit_exponent, parse_sweep, run_sweep
from telebench.profile.timing import Timings, measure
from telebench.profile.workload import Workload

__all__ = [
    "DEFAULT_THREADS",
    "TELEPORT",
    "Breakdown",
    "CaseProfile",
    "ProfileOptions",
    "ProfileSubject",
    "SuiteSource",
    "Sweep",
    "SubjectOptions",
    "Timings",
    "Workload",
    "fit_exponent",
    "measure",
    "parse_sweep",
    "profile_subject",
    "profile_teleports",
    "run_profile",
    "run_sweep",
    "subject_from_options",
    "subjects_from_suite",
]
