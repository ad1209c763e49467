"""The one mesh axis, `('data',)`: batches are split over it, parameters replicated."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ie_jax.utils import collectives


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices of all processes (or the given ones)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def gathered(mesh: Mesh) -> NamedSharding:
  """Where a step's per-example outputs go so the host can read them (`Local.gathered`)."""
  return collectives.current().gathered(mesh)


def put_batch(batch, mesh: Mesh):
  """Places a host-local batch (pytree of arrays, batch-major) on the mesh.

  Each process passes its own slice; the global batch is their concatenation.
  """
  n = mesh.devices.size
  sharding = batch_sharded(mesh)

  def put(x):
    x = np.asarray(x)
    if (x.shape[0] * jax.process_count()) % n:
      raise ValueError(f'The global batch ({x.shape[0] * jax.process_count()}) must divide '
                       f'evenly over {n} devices.')
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(put, batch)
