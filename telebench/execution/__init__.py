"""Executors run the pairs of a plan and hand each finished trial record back as it completes.

A pair (all arms of one case, optimizer, device and seed) is the unit of work: its arms must
share a machine and run interleaved, so their timings stay comparable.

- `local`: sequential, in this process (the timing reference).
- `process`: a pool of spawned worker processes on this machine (`jobs`, `allow_shared_device`).
- `ray`: one Ray task per pair on a local or remote Ray cluster (`address`); needs `telebench[ray]`.
"""
