"""Ray, for `compare --ray`: joining a cluster (or starting a throw-away one), what its nodes offer, and running
units of work there as Ray tasks. The only module that imports ray (an optional extra: `edgeval[ray]`).

Each unit is one Ray generator task asking for the CPUs its configuration's threads use (so two llama.cpp jobs
never share cores), the memory its configuration is predicted to take (so Ray sends it only to a node with that
much, and never runs more on a node than its memory holds) and a GPU when it offloads. It streams each answered
question back as it is done (`next_event`), and the driver stores it at once. Ray itself does not retry these tasks
(it would replay the whole unit): a task whose worker (or node) dies is a `Failure`, and the driver sends a new unit
with only the questions not stored yet.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import edgeval
from edgeval.core.errors import EdgevalError, describe
from edgeval.core.units import format_bytes
from edgeval.running import detached

MAX_RETRIES = 3  # a unit whose worker process (or node) dies is sent again this many times, then given up
CONNECT_TIMEOUT_S = 5.0


class RayMissingError(EdgevalError):
    """`--ray` was given but Ray is not installed."""

    hint = "pip install 'edgeval[ray]' (Ray's version must match the cluster's)"

    def __init__(self) -> None:
        super().__init__("--ray needs Ray, which is not installed")


class ClusterError(EdgevalError):
    """No Ray cluster at the address given, or one edgeval cannot use."""

    hint = "start one with `ray start --head` (then `ray start --address=HEAD:6379` on each other machine), or use --ray local"


@dataclass(frozen=True)
class NodeCapacity:
    """What a live node offers Ray's scheduler: CPUs, memory and GPUs."""

    ray_node_id: str
    ip: str
    cpus: float
    memory_bytes: int
    gpus: float


@dataclass(frozen=True)
class Failure:
    """Why a task told nothing more: `crashed` when its Ray worker or node died (worth another try)."""

    message: str
    crashed: bool = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError() from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, where nothing listens at HOST:PORT (Ray itself would retry for a minute)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(
            f"--ray {address!r} is not an address", hint="give HOST:PORT (the head's, 6379 by default), auto or local"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


class Cluster:
    """A connection to a Ray cluster (`local`: a throw-away one on this machine, shut down on close)."""

    def __init__(self, address: str) -> None:
        ray = _import_ray()
        if address not in ("auto", "local"):
            _check_reachable(address)
        # Ray prints what it hears of its workers (one killed, say) on the driver's stdout, which carries edgeval's
        # answer (`--json`): while connected, whatever this process writes to stdout goes to stderr.
        self._stdout = contextlib.redirect_stdout(sys.stderr)
        self._stdout.__enter__()
        try:
            self._connect(ray, address)
        except BaseException:
            self._stdout.__exit__(None, None, None)
            raise
        self.address = address
        self._ray = ray
        self._task = ray.remote(_stream_on_node)

    def _connect(self, ray: Any, address: str) -> None:
        # The nodes run the driver's own edgeval (shipped as a module), so their code is the driver's; what a
        # node needs installed is Ray and edgeval's dependencies (llama-cpp-python).
        package = str(Path(edgeval.__file__).parent)
        options: dict[str, Any] = {"runtime_env": {"py_modules": [package]}, "logging_level": logging.ERROR,
                                   "log_to_driver": False}  # fmt: skip
        if address == "local":
            options["include_dashboard"] = False
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            where = "on this machine" if address == "auto" else f"at {address}"
            raise ClusterError(f"no Ray cluster runs {where} ({str(exc).splitlines()[0]})") from None

    def close(self) -> None:
        """Disconnect (and, for `local`, stop the cluster)."""
        try:
            self._ray.shutdown()
        finally:
            self._stdout.__exit__(None, None, None)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def nodes(self) -> list[NodeCapacity]:
        """The live nodes and what each offers."""
        out = []
        for n in self._ray.nodes():
            if not n.get("Alive"):
                continue
            r = n.get("Resources", {})
            out.append(NodeCapacity(n["NodeID"], n["NodeManagerAddress"], float(r.get("CPU", 0)),
                                    int(r.get("memory", 0)), float(r.get("GPU", 0))))  # fmt: skip
        return out

    def threads(self, asked: int | None) -> int:
        """The threads each configuration runs with: as asked, else the CPUs of the smallest node (so every node
        can take a unit, and a bigger one runs several at once, each on cores of its own)."""
        if asked:
            return asked
        cpus = [n.cpus for n in self.nodes() if n.cpus >= 1]
        return max(1, int(min(cpus))) if cpus else 1

    def slots(self, threads: int) -> int:
        """How many units of `threads` threads the cluster runs at once."""
        return max(1, sum(math.floor(n.cpus / threads) for n in self.nodes()))

    def unfit(self, threads: int, memory_bytes: int, gpus: int) -> str | None:
        """Why no live node can take a task of `threads` CPUs, `memory_bytes` and `gpus` (None: one can), so that
        a configuration no node holds is recorded as such rather than left waiting."""
        nodes = self.nodes()
        if any(n.cpus >= threads and n.memory_bytes >= memory_bytes and n.gpus >= gpus for n in nodes):
            return None
        largest = max((n.memory_bytes for n in nodes), default=0)
        return (f"no Ray node offers {threads} CPUs, {format_bytes(memory_bytes)} of memory"
                + (f" and {gpus} GPU" if gpus else "")
                + f" (the most memory a node offers: {format_bytes(largest)}, the most CPUs: "
                f"{max((n.cpus for n in nodes), default=0):g})")  # fmt: skip

    def submit(self, unit: detached.Unit, threads: int, memory_bytes: int, gpus: int = 0) -> Any:
        """Start a unit as a Ray generator task; returns its handle (what `wait` and `next_event` take)."""
        options = {"num_cpus": threads, "num_gpus": gpus, "memory": memory_bytes, "max_retries": 0,
                   "num_returns": "streaming", "name": f"edgeval {unit.prepared.spec.model_label}"}  # fmt: skip
        return self._task.options(**options).remote(unit)

    def wait(self, handles: Sequence[Any], timeout_s: float) -> list[Any]:
        """The handles among `handles` with something new to tell (waiting up to `timeout_s` for one)."""
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=timeout_s)
        return list(ready)

    def next_event(self, handle: Any) -> detached.Started | detached.Answer | detached.UnitResult | Failure:
        """What a ready task tells next: that it started (with its node's address, which the result does not
        repeat), one answered question, its result — or a `Failure` saying why it will tell nothing more."""
        exceptions = self._ray.exceptions
        try:
            event: detached.Started | detached.Answer | detached.UnitResult = self._ray.get(next(handle))
        except StopIteration:
            return Failure("the Ray task ended without a result")
        except exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            if isinstance(cause, ModuleNotFoundError):
                return Failure(f"a Ray node cannot import {cause.name} — install edgeval's dependencies on every "
                               f"node: pip install 'edgeval[ray]=={edgeval.__version__}'")  # fmt: skip
            return Failure(describe(cause))
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.OutOfMemoryError) as exc:
            return Failure(f"the Ray worker running it died ({type(exc).__name__})", crashed=True)
        except exceptions.TaskCancelledError:
            return Failure("cancelled")
        except exceptions.RayError as exc:
            return Failure(f"Ray could not run it ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})")
        if isinstance(event, detached.Started):  # the node the driver records (its answers and result follow)
            ips = {n.ray_node_id: n.ip for n in self.nodes()}
            return replace(event, node=replace(event.node, ip=ips.get(event.node.ray_node_id or "")))
        return event

    def cancel(self, handles: Sequence[Any]) -> None:
        """Stop tasks (their workers are killed, and with them llama.cpp)."""
        for handle in handles:
            self._ray.cancel(handle, force=True)


def _stream_on_node(unit: detached.Unit) -> Iterator[detached.Started | detached.Answer | detached.UnitResult]:
    """The Ray task: run the unit on this node, telling as it goes, as the Ray node this is."""
    import ray

    node = replace(detached.node_facts(), ray_node_id=ray.get_runtime_context().get_node_id())
    yield from detached.stream(unit, node)
