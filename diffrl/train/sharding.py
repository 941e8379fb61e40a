"""Data-parallel sharding over all devices: a one-axis ``Mesh`` named ``data``.

The batch is split along its first axis over the ``data`` axis and parameters are replicated, so XLA's SPMD
partitioner turns the jitted train step into per-device shards plus one gradient all-reduce. Multi-host jobs
(several GPU hosts, TPU pods) call :func:`initialize_distributed` first; the same code then sees every device
of every process.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

T = TypeVar("T")

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` (cluster auto-detection: SLURM, TPU pods, or the ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` variables); call before any other JAX work."""
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    jax.distributed.initialize(**kwargs)


def sync_processes(name: str) -> None:
    """A barrier of all processes of a multi-host run (nothing in a single-process one): what one process does to
    the shared workdir after it, the others have looked at before it."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def process_values(values) -> np.ndarray:
    """``[P, ...]``: the array ``values`` as each of the ``P`` processes holds it, in process order (one
    all-gather; ``[values]`` in a single process)."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        return values[None]
    return np.asarray(multihost_utils.process_allgather(values)).reshape((-1, *values.shape))


def on_process_0(work: Callable[[], T], failure: Exception) -> T | None:
    """``work()`` on process 0 alone (a write to the workdir the processes share), and on every process an
    exception when it failed there: process 0 raises its own, the others ``failure``, instead of waiting for process
    0 at their next barrier. Returns what ``work`` returned on process 0, ``None`` on the others."""
    if jax.process_count() == 1:
        return work()
    result = error = None
    if jax.process_index() == 0:
        try:
            result = work()
        except BaseException as err:  # every kind, Ctrl-C included: the other processes must learn of it
            error = err
    if multihost_utils.broadcast_one_to_all(np.asarray(error is not None)):
        raise error or failure
    return result


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes) with the axis ``data``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(f"the global batch size {batch_size} is not divisible by the {mesh.size} devices of the mesh; "
                         f"pick a multiple of {mesh.size}")


def put_replicated(tree, mesh: Mesh):
    """Place a host pytree (the same value on every process) replicated on every device of ``mesh``."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def shard_batch(batch, mesh: Mesh):
    """Inside jit: constrain every array of ``batch`` to be split along its first axis over ``data``."""
    return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))
