"""Fails fast on configs with unknown keys or values of the wrong type, naming the key.

`check_overrides` names the valid keys for an unknown `--config.x` override (ml_collections
rejects it with a bare KeyError), and the new name of a key issue #21 moved; `validate` also
catches keys a config file adds itself (a typo in `configs/flowers.py` would otherwise be
silently unused).
"""
import ml_collections

# Keys that moved when the explore section was split into sections named after the
# method's steps (issue #21, 2026-12-07): old name -> new name.
MOVED = {
    'explore.queries_per_iteration': 'search.queries_per_iteration',
    'explore.images_per_query': 'search.images_per_query',
    'explore.min_images_per_query': 'reward.min_images',
    'explore.top_images_per_concept': 'reward.top_images',
    'explore.query_scoring': 'reward.query_scoring',
    'explore.reward_k': 'reward.k',
    'explore.embed_batch_size': 'reward.embed_batch_size',
    'explore.epochs_per_iteration': 'train.epochs_per_iteration',
    'explore.pcr': 'replay.pcr',
    'explore.replay_fraction': 'replay.fraction',
    'explore.replay_keep': 'replay.keep',
    'explore.finetune_epochs': 'init.finetune_epochs',
    'explore.warmup_epochs': 'init.warmup_epochs',
    'explore.warmup_images': 'init.warmup_images',
    'explore.knn_eval_examples': 'monitor.knn_examples',
}


class ConfigError(ValueError):
  """The config does not match the schema."""


def check_overrides(argv: list[str], reference: ml_collections.ConfigDict) -> None:
  """Checks that every `--config.KEY=VALUE` in `argv` names a key of `reference`."""
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0]
    section, parts = reference, path.split('.')
    for i, part in enumerate(parts):
      if not isinstance(section, ml_collections.ConfigDict) or part not in section:
        where = '.'.join(parts[:i]) or 'the top level'
        valid = sorted(section.keys()) if isinstance(section, ml_collections.ConfigDict) else []
        moved = f' It is config.{MOVED[path]} now.' if path in MOVED else ''
        raise ConfigError(f'Unknown config key config.{path} in {arg!r}.{moved} Valid keys '
                          f'at {where}: {valid}.')
      section = section[part]


def validate(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
             prefix: str = 'config') -> None:
  """Checks that every key of `config` exists in `reference` with a compatible type."""
  for key, value in config.items():
    name = f'{prefix}.{key}'
    if key not in reference:
      raise ConfigError(f'Unknown config key {name}; valid keys at {prefix}: '
                        f'{sorted(reference.keys())}.')
    want = reference[key]
    if isinstance(want, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f'{name} must be a section (ConfigDict), got {type(value).__name__}.')
      validate(value, want, name)
      continue
    if not _compatible(value, want):
      raise ConfigError(f'{name} must be {type(want).__name__}, got {value!r} '
                        f'({type(value).__name__}).')


def _compatible(value, want) -> bool:
  if isinstance(want, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(want, bool)
  if isinstance(want, float):
    return isinstance(value, (int, float))  # 1 for 1.0 is fine
  return isinstance(value, type(want))
