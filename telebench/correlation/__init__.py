"""The correlation study: do sharpness and curvature of trained networks predict their validation loss?

``telebench correlate STUDY.yaml`` trains N networks per case with different seeds
(:mod:`~telebench.correlation.train`), measures the metrics of :mod:`telebench.symmetry.sharpness`
and :mod:`telebench.symmetry.curvature` at the end, and reports Pearson and Spearman correlations
with bootstrap intervals (:mod:`~telebench.correlation.stats`, :mod:`~telebench.correlation.report`).
The study format is :mod:`~telebench.correlation.schema`. :mod:`~telebench.correlation.paired`
compares final validation metrics of teleport arms with the baseline seed by seed, for the
generalization suite run by ``telebench run``.
"""

from telebench.correlation.run import Outcome, run_study
from telebench.correlation.schema import Study, StudyCase, load_study

__all__ = ["Outcome", "Study", "StudyCase", "load_study", "run_study"]
