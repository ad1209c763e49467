"""The one mesh axis, `('data',)`: batches are split over it, parameters replicated."""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices of all processes (or the given ones)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def gathered(mesh: Mesh) -> NamedSharding:
  """Where a step's per-example outputs (features, rewards) go so the host can read them.

  One process reads a 'data'-sharded result directly. With several processes each holds
  only its devices' part, so the output is replicated (an all-gather inside the step).
  Single-process steps keep the sharded output: their executables are the ones the
  persistent compilation cache has served reliably (docs/SCALING.md).
  """
  return replicated(mesh) if jax.process_count() > 1 else batch_sharded(mesh)


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
