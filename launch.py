r"""Runs ie-jax from a config file: the explore loop, or plain MoCo v3 on the target.

  python launch.py --config=configs/tiny.py --workdir=runs/tiny
  python launch.py --config=configs/tiny.py:iterations=4,mode=random --workdir=runs/random
  python launch.py --config=configs/tiny.py --workdir=runs/ssl --mode=pretrain
  python launch.py --config=configs/demo.py:compare --workdir=runs/demo-compare

A run resumes from the latest checkpoint in --workdir.

Several processes (hosts, or one per GPU): start the same command in each, with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (or the JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID variables; under SLURM or Open MPI nothing is needed) and a
--workdir on a filesystem they all see. See docs/SCALING.md.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs import common
from ie_jax import pretrain, session
from ie_jax.explore import search
from ie_jax.utils import config_check, distributed

# A spent search quota (EX_TEMPFAIL): the run is checkpointed; run the command again later.
QUOTA_EXIT_CODE = 75

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
_MODE = flags.DEFINE_enum('mode', 'explore', ['explore', 'pretrain'],
                          'explore: the Internet Explorer loop; pretrain: MoCo v3 on the '
                          'target set only (the paper\'s initial target fine-tune).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '',
                                   'host:port of process 0, for a multi-process run.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Processes in the job (0: one, '
                                      'or as the cluster environment says).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process\'s index in the job.')
_HEARTBEAT = flags.DEFINE_integer('heartbeat_timeout_s', 100,
                                  'A process silent this long stops the whole job.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-file INFO lines out
  config_check.validate(_CONFIG.value, common.get_base_config())
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         heartbeat_timeout_s=_HEARTBEAT.value)
  run = {'explore': session.run, 'pretrain': pretrain.run}[_MODE.value]
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except search.QuotaStop as e:
    logging.error('%s', e)
    sys.exit(QUOTA_EXIT_CODE)


if __name__ == '__main__':
  try:
    config_check.check_overrides(sys.argv[1:], common.get_base_config())
  except config_check.ConfigError as e:
    sys.exit(f'error: {e}')
  app.run(main)
