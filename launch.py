r"""Runs ie-jax from a config file.

  python launch.py --config=configs/tiny.py --workdir=runs/tiny
  python launch.py --config=configs/tiny.py:epochs=4 --workdir=runs/tiny --config.seed=1

The explore loop (issue #6) is not built yet: this runs plain MoCo v3 training on the
target set (the paper's initial target fine-tune) and says so. It resumes from the latest
checkpoint in --workdir.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from configs import common
from ie_jax import pretrain
from ie_jax.utils import config_check

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-file INFO lines out
  config_check.validate(_CONFIG.value, common.get_base_config())
  logging.warning('The explore loop is not implemented yet: running MoCo v3 on the target '
                  'set only, with no web search.')
  pretrain.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
