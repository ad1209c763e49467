"""Fails fast on configs with unknown keys or values of the wrong type, naming the key.

ml_collections already rejects unknown `--config.x` overrides; this also catches keys a
config file adds itself (a typo in `configs/flowers.py` would otherwise be silently unused).
"""
import ml_collections


class ConfigError(ValueError):
  """The config does not match the schema."""


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
