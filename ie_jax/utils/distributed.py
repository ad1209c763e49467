"""Several processes, one job: JAX's distributed runtime and the little the explorer needs.

`initialize` starts `jax.distributed` when a cluster is described (explicit flags, the
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` variables, or SLURM /
Open MPI, which JAX detects itself); a single process does nothing. What the processes
share once running is `collectives.current()`; the checks here use it at start.
"""
import hashlib
import json
import logging
import os

import jax

from ie_jax.utils import collectives

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


def check_same_config(config_dict: dict) -> None:
  """Fails at start if the processes were given different configs.

  Raises:
    DistributedError: naming the processes whose config differs from process 0's.
  """
  digest = hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str)
                          .encode('utf-8')).hexdigest()
  digests = collectives.current().allgather_json(digest)
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
