"""Profiler labels (``torch.profiler.record_function``) for the phases of a teleport.

``telebench profile`` groups time and memory by these exact strings:

* ``GROUP_ACTION``: building group elements and moving gradients or weights inside the search;
* ``OBJECTIVE``: evaluating the objective (forward and backward over the batch);
* ``OBJECTIVE_GRAD``: its gradient w.r.t. the group element (the Hessian-vector product over the
  batch, then the pull-back into the Lie algebra);
* ``APPLY``: applying the chosen element and writing the weights into the model;
* ``INVARIANCE_CHECK``: the loss and objective after the move, the tolerance test and any restore.
"""

from contextlib import AbstractContextManager, nullcontext

import torch
from torch.profiler import record_function

GROUP_ACTION = "teleport/group_action"
OBJECTIVE = "teleport/objective"
OBJECTIVE_GRAD = "teleport/objective_grad"
APPLY = "teleport/apply"
INVARIANCE_CHECK = "teleport/invariance_check"
ALL = (GROUP_ACTION, OBJECTIVE, OBJECTIVE_GRAD, APPLY, INVARIANCE_CHECK)


def span(name: str) -> AbstractContextManager[object]:
    """``record_function(name)`` while a profiler is recording, otherwise nothing.

    A label costs several microseconds even with no profiler attached; at the dozens per teleport
    that is about two gradient evaluations of the paper's MNIST net, so it is skipped unless someone
    is looking. (If torch stops exposing the flag, every span records.)
    """
    if getattr(torch.autograd.profiler, "_is_profiler_enabled", True):
        return record_function(name)
    return _NOTHING


_NOTHING = nullcontext()  # reusable: entering it does nothing
