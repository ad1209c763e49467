"""Target datasets by name. Each loader returns (uint8 images [N, H, W, 3], int labels [N]).

An explicit dict, no registry: an unknown name fails with the valid ones.
"""
from ie_jax.data import shapes


def _shapes(target_config):
  # Generated: the split only changes the seed, so train and test never share images.
  num = target_config.num_examples or 1024
  seed = {'train': 0, 'test': 1}[target_config.split]
  return shapes.generate(num, target_config.image_size, seed)


TARGETS = {
    'shapes': _shapes,
}


def load(target_config):
  if target_config.name not in TARGETS:
    raise ValueError(f'Unknown target {target_config.name!r}; valid: {sorted(TARGETS)}.')
  images, labels = TARGETS[target_config.name](target_config)
  if target_config.num_examples:
    images, labels = images[:target_config.num_examples], labels[:target_config.num_examples]
  return images, labels
