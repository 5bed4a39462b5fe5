"""The correlation study: do sharpness and curvature of trained networks predict their validation loss?

``telebench correlate STUDY.yaml`` trains N networks per case with different seeds
(:mod:`~telebench.experiments.correlation.train`), measures the metrics of :mod:`telebench.symmetry.objectives.sharpness`,
:mod:`telebench.symmetry.objectives.curvature` (telebench's orbit curvature) and
:mod:`telebench.symmetry.objectives.curvature_reference` (the reference code's ψ) at the end, and reports Pearson and Spearman correlations
with bootstrap intervals (:mod:`~telebench.analysis.correlation`, :mod:`~telebench.experiments.correlation.report`).
Networks train for a fixed budget or with early stopping on a holdout of the training split
(:mod:`~telebench.experiments.correlation.stopping`). The study format is
:mod:`~telebench.experiments.correlation.schema`. :mod:`~telebench.analysis.paired_final`
compares final validation metrics of teleport arms with the baseline seed by seed, for the
generalization suite run by ``telebench run``.
"""
