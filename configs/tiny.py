r"""Tiny CPU config: the whole explore loop in about a minute, on a generated world.

  python launch.py --config=configs/tiny.py --workdir=runs/tiny

A ResNet-18 of width 8 on 32-px crops explores a generated corpus of captioned shapes and
distractor textures (`ie_jax/worlds/shapes_world.py`) for a target of generated shapes,
through the offline local search engine. Used by the tests and as the embedded offline
default; it shows the machinery, not the paper's numbers (see configs/flowers.py for those).

`get_config` arguments, e.g. `configs/tiny.py:iterations=4,mode=random`:
  iterations: explore iterations (default 2).
  mode: 'learned' (the paper's "Ours") or 'random'.
  examples: target images (default 128).
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, iterations=2, mode='learned', examples=128, epochs=1)
  config = common.get_base_config()
  config.model.depth = 18
  config.model.width = 8
  config.model.small_stem = True
  config.model.dim = 32
  config.model.mlp_dim = 64
  config.moco.image_size = 32
  config.train.batch_size = 16
  config.train.epochs = arg.epochs  # plain MoCo v3 runs (ie_jax.pretrain)
  config.target.name = 'shapes'
  config.target.num_examples = arg.examples
  config.target.image_size = 40
  config.data.num_workers = 0

  config.world = 'shapes'
  config.concepts.vocab = 'world'
  config.concepts.mode = arg.mode
  config.concepts.label_category = 'shape'
  config.concepts.tier_bounds = (2, 5)   # 12 concepts: scaled-down 250 / 1000 tiers
  config.web.engine = 'local'
  config.web.min_side = 32
  config.web.max_side = 48
  config.web.part_size = 25
  config.explore.iterations = arg.iterations
  config.search.queries_per_iteration = 4
  config.search.images_per_query = 12
  config.reward.min_images = 3
  config.reward.top_images = 3
  config.train.epochs_per_iteration = 1
  config.reward.embed_batch_size = 64
  config.monitor.knn_examples = 64

  config.log_every_steps = 4
  config.checkpoint_every_steps = 8
  return config
