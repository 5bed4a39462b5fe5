"""Learning where to teleport: LSTM meta-optimizers for the update and the group element.

Reproduces the ICLR-2024 paper's meta-learning experiment (paper-facts §5) with exact group actions
and honest accounting: every learned teleport goes through ``telebench.symmetry``'s groups with an
exact inverse, and its loss change is recorded. A ``kind: meta`` suite runs it, as every kind runs:
``telebench run suites/paper-meta.yaml`` (the plugin is :mod:`~telebench.experiments.meta.experiment`).
"""
