r"""Tiny CPU config: a ResNet-18 of width 8 on 32-px generated shapes, for tests and smoke runs.

  python launch.py --config=configs/tiny.py --workdir=runs/tiny

Takes about a minute on 2 CPU cores. `get_config('steps=4')`-style arguments:
  epochs: SSL epochs over the target (default 2).
  examples: number of target images (default 128).
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, epochs=2, examples=128)
  config = common.get_base_config()
  config.model.depth = 18
  config.model.width = 8
  config.model.small_stem = True
  config.model.dim = 32
  config.model.mlp_dim = 64
  config.moco.image_size = 32
  config.train.batch_size = 16
  config.train.epochs = arg.epochs
  config.target.name = 'shapes'
  config.target.num_examples = arg.examples
  config.target.image_size = 40
  config.data.num_workers = 0
  config.log_every_steps = 4
  config.checkpoint_every_steps = 8
  return config
