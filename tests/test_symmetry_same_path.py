"""Today's searches follow the path of the code they replaced, step by step (fixtures/teleport_paths.json).

The fixture holds, for seeded float64 models and groups, the objective and the loss on the teleport
batch after k = 0, 1, …, K steps, written by the old per-step code (generic gl-data search with a
fresh QR per step, dense rescale elements, composed factors). The fused gl-data kernel, its
low-rank wide layers, the input-layer kernel and the vector rescale search must land on the same
values to rounding (rtol 1e-6).
"""

from __future__ import annotations

import json
import math

import pytest
from teleport_paths import CASES, FIXTURE, path

pytestmark = pytest.mark.usefixtures("one_thread")

EXPECTED = json.loads(FIXTURE.read_text())["cases"]


def test_the_fixture_covers_every_case_and_every_kind_of_layer():
    assert set(EXPECTED) == set(CASES)
    # Wide hidden layers (batch below width), tall ones, the input kernel (batch below the inputs)
    # and the dense input path (batch above them) each appear.
    assert any(spec["batch"] < min(spec["widths"][1:-1]) for spec in CASES.values())
    assert any(spec["batch"] > spec["widths"][0] for spec in CASES.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_search_follows_the_pinned_path(name):
    got, expected = path(name, max_weight_change=math.inf), EXPECTED[name]
    for key in ("objective", "loss"):
        assert len(got[key]) == len(expected[key])
        for k, (a, b) in enumerate(zip(got[key], expected[key], strict=True)):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-300), (name, key, k)
