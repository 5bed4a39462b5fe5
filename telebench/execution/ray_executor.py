"""`--executor ray --address auto|HOST:PORT`: one Ray task per pair, on a local or remote Ray cluster.

A pair is one task, so the arms of a seed always share a node and stay comparable. Resources keep
timed pairs apart: a CUDA pair asks for `num_gpus=1` (Ray then gives each GPU one pair at a time);
a timed CPU pair is pinned to a node whose CPU is idle and asks for all of that node's CPUs, so no
other Ray task runs beside it. With `allow_shared_device` (or untimed work) CPU pairs ask for
`threads` CPUs each and Ray packs them; their records say `timing.shared_device = true`.

Results stream back with `ray.wait` and reach `on_trial` as they finish. A task whose worker dies
is retried once by Ray (`max_retries=1`); a second failure records the pair's arms as `error`.
Ray is imported only here, and only when this executor is chosen.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from telebench.errors import UserError
from telebench.execution.base import TrialCallback, WorkerCallback, available_cpus, device_key
from telebench.execution.task import ProgressFn, Unit, UnitRunner
from telebench.execution.tracking import DeviceGate, PairTracker
from telebench.execution.worker import PairOutcome, PairTask, execute_pair

POLL_S = 0.1
CONNECT_TIMEOUT_S = 5  # for the TCP probes made before Ray is asked to connect
RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'telebench[ray]'."


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


@dataclass
class RayExecutor:
    runner: UnitRunner  # trains one task; see telebench.execution.task
    data_root: str | None = None
    address: str | None = None  # auto | HOST:PORT; None starts a private local cluster for this run
    jobs: int | None = None  # CPUs of the local cluster started here (None: every available core)
    allow_shared_device: bool = False  # let timed CPU pairs share a node (timings marked shared)
    timed: bool = True  # False for untimed work: CPU pairs are packed onto nodes
    threads: int | None = None  # torch threads per pair; None: the node's CPUs (timed) or 1 (shared)
    name: str = "ray"

    def __post_init__(self) -> None:
        ray = import_ray()  # fail before any training starts
        if self.address is None:
            if not ray.is_initialized():  # else the caller (a notebook, a test) already chose the cluster
                _probe_local(ray)
        elif self.address == "auto":
            _probe(_resolve_auto() or "auto", via="auto")
        else:
            _probe(self.address)
        if self.jobs is not None and self.jobs < 1:
            raise UserError(f"--jobs {self.jobs}: the local Ray cluster needs at least 1 CPU.")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads {self.threads}: torch threads per pair must be at least 1.")

    @property
    def exclusive(self) -> bool:
        return self.timed and not self.allow_shared_device

    def run(
        self,
        pairs: list[list[Unit]],
        on_trial: TrialCallback,
        on_progress: ProgressFn | None,
        on_worker: WorkerCallback | None = None,
    ) -> None:
        if not pairs:
            return
        _check_devices(pairs)
        ray = import_ray()
        owns_cluster = _connect(ray, self.address, self.jobs)
        try:
            _RayRun(self, ray, pairs, PairTracker(pairs, on_trial, on_progress, on_worker)).run()
        finally:
            if owns_cluster:
                ray.shutdown()


def _check_devices(pairs: list[list[Unit]]) -> None:
    for pair in pairs:
        key = device_key(pair[0].device)
        if key.startswith("cuda:") and key != "cuda:0":
            # `case` is not part of the Unit protocol, but every kind's units have one today.
            case = cast(Any, pair[0]).case
            raise UserError(
                f"device {pair[0].device!r} (case {case!r}): Ray gives each pair a GPU of its own choosing, "
                "so a GPU index means nothing across nodes; use `devices: [cuda]` with --executor ray."
            )


def _probe(address: str, via: str | None = None) -> None:
    """Refuse an address where nothing listens: Ray itself retries such an address for many minutes."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"--address {address!r} is neither auto nor HOST:PORT; pass the address `ray start --head` printed, "
            "e.g. 10.0.0.5:6379."
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f" at {address} ({reason}; RAY_ADDRESS or the last `ray start` put the cluster there)" if via \
            else f" there ({reason})"
        raise UserError(
            f"--address {via or address}: nothing answers{where}; start the cluster with "
            f"`ray start --head --port={port}` on {host}, or check the address."
        ) from None


def _resolve_auto() -> str | None:
    """The HOST:PORT that `--address auto` means (RAY_ADDRESS, else the last `ray start`), or None if Ray
    cannot say; Ray's own lookup, so that a stale address is probed rather than retried for minutes."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address("auto")
    except Exception:  # no cluster found (ray.init says so at once) or a Ray without this helper
        return None
    return found if isinstance(found, str) else None


def _probe_local(ray: Any) -> None:
    """A private local cluster talks TCP to itself at this node's IP; without a working network there (no
    loopback, say), Ray retries 127.0.0.1 for a quarter of an hour, so check in a second instead."""
    hosts = ["127.0.0.1"]
    try:
        hosts.append(str(ray.util.get_node_ip_address()))
    except Exception:  # Ray then falls back on 127.0.0.1, checked above
        pass
    for host in dict.fromkeys(hosts):
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as server:
                server.bind((host, 0))
                server.listen(1)
                socket.create_connection(server.getsockname()[:2], timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise UserError(
                f"--executor ray: this machine cannot reach itself at {host} ({exc.strerror or exc}), which a local "
                "Ray cluster needs; bring the network (or at least the loopback `lo`) up, or use --executor process."
            ) from None


def _connect(ray: Any, address: str | None, jobs: int | None) -> bool:
    """Join the cluster at `address`, or start a private local one; True if this call started it.
    With `address=None` Ray gets "local", so it never attaches to a cluster the user did not name."""
    if ray.is_initialized():  # the caller (a notebook, a test) already chose the cluster
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:
            ray.init(address="local", num_cpus=jobs or available_cpus(), include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError) as exc:
        where = address or "a local cluster"
        raise UserError(
            f"--address {where}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); start one with "
            "`ray start --head` and pass the address it prints (a cluster with token authentication also needs "
            "RAY_AUTH_MODE=token and its token here, see `ray get-auth-token`)."
        ) from None
    return True


# ---- inside the Ray workers ----------------------------------------------------------------------
class EventBox:
    """A tiny actor that buffers worker events until the driver drains them."""

    def __init__(self) -> None:
        self._items: list[Any] = []

    def put(self, item: Any) -> None:
        self._items.append(item)

    def drain(self) -> list[Any]:
        items, self._items = self._items, []
        return items


@dataclass(frozen=True)
class RaySink:
    box: Any  # an EventBox actor handle

    def put(self, item: Any) -> None:
        self.box.put.remote(item)  # fire and forget: progress must not slow the pair


def run_ray_task(task: PairTask, events: RaySink) -> PairOutcome:
    import ray

    return execute_pair(task, events, extra={"node": ray.get_runtime_context().get_node_id()})


# ---- the driver ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Node:
    id: str
    host: str
    cpus: int


@dataclass(frozen=True)
class _Placement:
    options: dict[str, Any]  # Ray task options: resources and scheduling strategy
    threads: int
    node: str | None  # the node held exclusively, if any


class _RayRun:
    def __init__(self, ex: RayExecutor, ray: Any, pairs: list[list[Unit]], tracker: PairTracker) -> None:
        self.ex, self.ray, self.pairs, self.tracker = ex, ray, pairs, tracker
        self.gate = DeviceGate(ex.exclusive)
        self.nodes = self._cpu_nodes()
        self._check_resources()
        self.remote_pair = ray.remote(run_ray_task)
        self.box = ray.remote(EventBox).options(num_cpus=0).remote()
        self.sink = RaySink(self.box)
        self.drain_ref: Any = None  # an outstanding EventBox.drain call
        self.waiting: deque[int] = deque(range(len(pairs)))
        self.inflight: dict[Any, tuple[int, str | None]] = {}  # ObjectRef -> (pair index, held node)

    def _cpu_nodes(self) -> list[_Node]:
        return [
            _Node(n["NodeID"], n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"), int(n["Resources"]["CPU"]))
            for n in self.ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1
        ]

    def _check_resources(self) -> None:
        """Refuse a plan the cluster can never place, instead of waiting forever on infeasible tasks."""
        devices = {device_key(p[0].device) for p in self.pairs}
        if "cpu" in devices and not self.nodes:
            raise UserError("--executor ray: the Ray cluster has no node with a CPU for the plan's cpu pairs; add one.")
        if any(d.startswith("cuda") for d in devices) and not self.ray.cluster_resources().get("GPU"):
            raise UserError(
                "--executor ray: the plan has cuda pairs but the Ray cluster has no GPU; "
                "start GPU nodes with `ray start` or run the cpu cases only."
            )

    def _placement(self, index: int) -> _Placement | None:
        """Where pair `index` may run now, or None while every node it could use is busy."""
        if device_key(self.pairs[index][0].device).startswith("cuda"):
            threads = self.ex.threads or 1
            return _Placement({"num_cpus": threads, "num_gpus": 1}, threads, None)
        if not self.ex.exclusive:
            threads = self.ex.threads or 1
            return _Placement({"num_cpus": threads}, threads, None)
        node = next((n for n in self.nodes if self.gate.free(n.id)), None)
        if node is None:
            return None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = NodeAffinitySchedulingStrategy(node_id=node.id, soft=False)
        return _Placement({"num_cpus": node.cpus, "scheduling_strategy": strategy}, self.ex.threads or node.cpus, node.id)

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while self.waiting or self.inflight:
                self._submit_ready()
                refs = list(self.inflight)
                if not refs:  # with nothing in flight every node is free, so this is a bug, not a wait
                    raise RuntimeError(f"ray executor: {len(self.waiting)} pair(s) wait but none can be placed")
                ready, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
                if ready:
                    ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
                self._drain_events()
                for ref in ready:
                    self._collect(ref)
        except BaseException:
            self._abort()
            raise
        finally:
            self._release_box()

    def _release_box(self) -> None:
        """On a shared cluster the actor would outlive the run; a dead cluster has nothing to release."""
        try:
            self.ray.kill(self.box)
        except Exception:  # never mask the run's own outcome or a Ctrl-C
            pass

    def _submit_ready(self) -> None:
        for index in list(self.waiting):
            placement = self._placement(index)
            if placement is None:
                continue
            task = PairTask(
                index=index,
                specs=tuple(self.pairs[index]),
                runner=self.ex.runner,
                data_root=self.ex.data_root,
                threads=placement.threads,
                shared_device=not self.ex.exclusive,
                executor=self.ex.name,
            )
            ref = self.remote_pair.options(max_retries=1, **placement.options).remote(task, self.sink)
            if placement.node is not None:
                self.gate.acquire(placement.node)
            self.inflight[ref] = (index, placement.node)
            self.waiting.remove(index)

    def _collect(self, ref: Any) -> None:
        index, node = self.inflight.pop(ref)
        if node is not None:
            self.gate.release(node)
        try:
            outcome: PairOutcome = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the task failed or its worker died, after Ray's retry
            self.tracker.fail(index, f"Ray task failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
            return
        if outcome.user_error is not None:
            raise UserError(outcome.user_error)
        self.tracker.deliver(outcome)

    def _drain_events(self) -> None:
        """Read worker events without blocking: the actor may still be starting while pairs already run."""
        if self.drain_ref is None:
            self.drain_ref = self.box.drain.remote()
        ready, _ = self.ray.wait([self.drain_ref], timeout=0)
        if ready:
            messages, self.drain_ref = self.ray.get(self.drain_ref), None
            for message in messages:
                self.tracker.event(message)

    def _abort(self) -> None:
        """Ctrl-C or a user error: keep what finished, cancel the rest (running tasks are killed)."""
        for ref, _ in list(self.inflight.items()):
            try:
                ready, _ = self.ray.wait([ref], timeout=0)
                if ready:
                    outcome = self.ray.get(ref)
                    if outcome.user_error is None:
                        self.tracker.deliver(outcome)
                else:
                    self.ray.cancel(ref, force=True)
            except Exception:  # a failed or cancelled task has nothing to keep
                continue
