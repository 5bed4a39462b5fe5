"""Exact symmetries of unmodified models, read from their torch.fx graph: channel rescale, norm-scale and
per-head attention GL(d), found by ``discovery``, acted on by ``actions``, searched covariantly by ``search``
and applied by ``teleport``; ``transport`` carries optimizer state through the move (docs/real-models.md).
"""
