"""Device mesh, shardings, multi-host start-up and host-local -> global batches.

fmjax is data-parallel: one mesh axis "data" spans every device of every host;
batches are sharded along it and the train state is replicated.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmjax.core.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Starts jax.distributed on multi-host runs (a no-op on one host).

  Multi-host launchers set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID (see launch/); on Cloud TPU pods and under SLURM jax finds them itself
  when FMJAX_DISTRIBUTED=1. FMJAX_DISTRIBUTED_TIMEOUT (seconds, default 300) bounds the
  wait for the other processes at start-up; a process that dies is noticed after at most
  min(that, 100) seconds and the others stop. On CPU devices, gloo also gives up when one
  process reaches a new collective more than 30 s after another (its own default), so give
  every host the same compilation cache, or none.
  """
  if jax.distributed.is_initialized():
    return
  if not (os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("FMJAX_DISTRIBUTED") == "1"):
    return
  # CPU devices of several processes talk through gloo (TCP); GPUs and TPUs use their own.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # How long a process waits for the others to start, and to notice that one has died.
  timeout = int(os.environ.get("FMJAX_DISTRIBUTED_TIMEOUT", "300"))
  timeouts = {"initialization_timeout": timeout, "heartbeat_timeout_seconds": min(timeout, 100)}
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]), **timeouts)
  else:
    jax.distributed.initialize(**timeouts)


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (-1: all of them)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, None) else num_devices
  if not 1 <= n <= len(devices):
    raise ConfigError(f"Asked for {n} devices but {len(devices)} are available.")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch size") -> None:
  n = mesh.devices.size
  if global_batch % n:
    raise ConfigError(f"The {what} {global_batch} must be divisible by the {n} devices of the "
                     f"mesh (and by the {jax.process_count()} hosts).")


def host_slice(global_batch: int) -> slice:
  """This host's rows of a global batch (hosts take equal consecutive blocks)."""
  per_host = global_batch // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def to_global(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """This host's rows [b_local,...] -> a global array sharded by `sharding`."""
  return jax.make_array_from_process_local_data(sharding, local)


def padded_batch(arrays, start: int, batch: int, target: NamedSharding):
  """Rows start .. start + batch of each host array [M,...] as global arrays sharded by
  `target` (each host giving its own rows), the last batch padded by repeating row M - 1;
  returns (the global arrays, valid bool [batch]: which rows are real)."""
  m = len(arrays[0])
  idx = np.arange(start, start + batch)
  valid = idx < m
  idx = np.where(valid, idx, m - 1)
  rows = host_slice(batch)
  return [to_global(np.asarray(a)[idx][rows], target) for a in arrays], valid


def to_host(tree):
  """Global arrays -> numpy arrays holding every row, on every process (gathered across
  processes when the arrays span several)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
