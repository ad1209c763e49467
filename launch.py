r"""Runs ie-jax from a config file: the explore loop, or plain MoCo v3 on the target.

  python launch.py --config=configs/tiny.py --workdir=runs/tiny
  python launch.py --config=configs/tiny.py:iterations=4,mode=random --workdir=runs/random
  python launch.py --config=configs/tiny.py --workdir=runs/ssl --mode=pretrain
  python launch.py --config=configs/demo.py:compare --workdir=runs/demo-compare

A run resumes from the latest checkpoint in --workdir.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from configs import common
from ie_jax import pretrain, session
from ie_jax.utils import config_check

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
_MODE = flags.DEFINE_enum('mode', 'explore', ['explore', 'pretrain'],
                          'explore: the Internet Explorer loop; pretrain: MoCo v3 on the '
                          'target set only (the paper\'s initial target fine-tune).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-file INFO lines out
  config_check.validate(_CONFIG.value, common.get_base_config())
  run = {'explore': session.run, 'pretrain': pretrain.run}[_MODE.value]
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
