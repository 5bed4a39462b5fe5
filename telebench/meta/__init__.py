"""Learning where to teleport: LSTM meta-optimizers for the update and the group element.

Reproduces the ICLR-2024 paper's meta-learning experiment (paper-facts §5) with exact group actions
and honest accounting: every learned teleport goes through ``telebench.symmetry``'s groups with an
exact inverse, and its loss change is recorded. A ``kind: meta`` suite runs it:

    from telebench.meta import run_meta_suite
    report = run_meta_suite("suites/paper-meta.yaml", Path("reports/paper-meta"))
"""

from telebench.meta.evaluate import TestRun, meta_test
from telebench.meta.optimizer import ArmSpec, LSTMSpec, MetaOptimizer, TeleportApply
from telebench.meta.run import build_arm, run_case, run_meta_suite
from telebench.meta.suite import MetaCase, MetaSuite, load_meta_suite
from telebench.meta.task import Task, TaskSpec, sample_task
from telebench.meta.train import MetaTrainLog, MetaTrainSpec, meta_train

__all__ = [
    "ArmSpec",
    "LSTMSpec",
    "MetaCase",
    "MetaOptimizer",
    "MetaSuite",
    "MetaTrainLog",
    "MetaTrainSpec",
    "Task",
    "TaskSpec",
    "TeleportApply",
    "TestRun",
    "build_arm",
    "load_meta_suite",
    "meta_test",
    "meta_train",
    "run_case",
    "run_meta_suite",
    "sample_task",
]
