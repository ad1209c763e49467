"""Several processes, one job: JAX's distributed runtime and the little the explorer needs.

`initialize` starts `jax.distributed` when a cluster is described (explicit flags, the
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` variables, or SLURM /
Open MPI, which JAX detects itself); a single process does nothing. The other helpers are
no-ops or identities with one process, so the explorer runs the same code either way.

Small Python values (queries, manifests rows, iterator states) cross processes as JSON
bytes inside a uint8 array: JAX's collectives move arrays, not objects.
"""
import hashlib
import json
import logging
import os

import jax
import numpy as np

log = logging.getLogger(__name__)

_ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


class DistributedError(RuntimeError):
  """The processes of one job disagree, or the cluster description is incomplete."""


def _cluster_detected() -> bool:
  # The variables JAX's own SLURM and Open MPI detection read; more than one task only.
  for var in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if int(os.environ.get(var, '1') or 1) > 1:
      return True
  return False


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
               heartbeat_timeout_s: int = 100) -> bool:
  """Starts the distributed runtime if this job has several processes.

  Arguments fall back to the JAX_* environment variables, then to JAX's cluster detection.

  Returns:
    True if the runtime was started.

  Raises:
    DistributedError: a partial description (e.g. an address without a process count).
  """
  coordinator_address = coordinator_address or os.environ.get(_ENV[0], '')
  num_processes = num_processes or int(os.environ.get(_ENV[1], '0') or 0)
  if process_id < 0:
    process_id = int(os.environ.get(_ENV[2], '-1') or -1)
  explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
  if explicit:
    if not (coordinator_address and num_processes > 0 and 0 <= process_id < num_processes):
      raise DistributedError(
          'A multi-process run needs all three of --coordinator_address (host:port of '
          'process 0), --num_processes and --process_id (0 <= id < num_processes), or the '
          f'{", ".join(_ENV)} variables; got address={coordinator_address!r}, '
          f'num_processes={num_processes}, process_id={process_id}.')
    if num_processes == 1:
      return False
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  elif _cluster_detected():
    kwargs = {}
  else:
    return False
  if os.environ.get('JAX_PLATFORMS', '').startswith('cpu'):
    # CPU devices of different processes talk through gloo; the default has no collectives.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    # Executables loaded from the persistent compilation cache (even one this same job
    # wrote) aborted in gloo with "collective mismatch" on resume: compile afresh.
    jax.config.update('jax_enable_compilation_cache', False)
  jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s, **kwargs)
  log.warning('Process %d of %d, %d local of %d devices.', jax.process_index(),
              jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def is_primary() -> bool:
  """Process 0: the one that writes logs, reports and the explorer's side files."""
  return jax.process_index() == 0


def _to_bytes(value) -> np.ndarray:
  return np.frombuffer(json.dumps(value, sort_keys=True).encode('utf-8'), np.uint8)


def allgather_json(value) -> list:
  """Every process's `value` (JSON-serialisable), in process order, on every process."""
  if jax.process_count() == 1:
    return [json.loads(json.dumps(value))]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = _to_bytes(value)
  sizes = multihost_utils.process_allgather(np.asarray([len(data)], np.int64))
  padded = np.zeros((int(np.max(sizes)),), np.uint8)
  padded[:len(data)] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(row[:int(n)]).decode('utf-8'))
          for row, n in zip(gathered, np.ravel(sizes))]


def broadcast_json(value):
  """Process 0's `value` on every process (the others' `value` is ignored)."""
  if jax.process_count() == 1:
    return value
  return allgather_json(value if is_primary() else None)[0]


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name`."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def check_same_config(config_dict: dict) -> None:
  """Fails at start if the processes were given different configs.

  Raises:
    DistributedError: naming the processes whose config differs from process 0's.
  """
  digest = hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str)
                          .encode('utf-8')).hexdigest()
  digests = allgather_json(digest)
  differ = [i for i, d in enumerate(digests) if d != digests[0]]
  if differ:
    raise DistributedError(
        f'Processes {differ} were started with a config that differs from process 0\'s: '
        'every process must get the same --config (and config overrides).')


def check_batch(batch_size: int, what: str = 'config.train.batch_size') -> None:
  """The global batch must split evenly over all devices of all processes."""
  if batch_size % jax.device_count():
    raise DistributedError(
        f'{what}={batch_size} does not divide over the {jax.device_count()} devices of '
        f'{jax.process_count()} process(es); use a multiple of {jax.device_count()}.')
