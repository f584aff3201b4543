"""Device mesh, shardings, multi-host start-up and host-local -> global batches.

fmjax is data-parallel: one mesh axis "data" spans every device of every host;
batches are sharded along it and the train state is replicated.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fmjax.errors import ConfigError

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Starts jax.distributed on multi-host runs (a no-op on one host).

  Multi-host launchers set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID (see launch/); on Cloud TPU pods jax finds them itself when
  FMJAX_DISTRIBUTED=1.
  """
  if jax.distributed.is_initialized():
    return
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("FMJAX_DISTRIBUTED") == "1":
    jax.distributed.initialize()


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
