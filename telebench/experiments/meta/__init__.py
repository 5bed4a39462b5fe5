"""Learning where to teleport: LSTM meta-optimizers for the update and the group element.

Reproduces the ICLR-2024 paper's meta-learning experiment (paper-facts §5) with exact group actions
and honest accounting: every learned teleport goes through ``telebench.symmetry``'s groups with an
exact inverse, and its loss change is recorded. A ``kind: meta`` suite runs it:

    from telebench.experiments.meta.run import run_meta_suite
    report = run_meta_suite("suites/paper-meta.yaml", Path("reports/paper-meta"))
"""
