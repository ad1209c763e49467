"""Property-based fuzzing of the config path: `get_config` argument strings
(`configs/common.parse_arg`) and the schema check (`ie_jax.utils.config_check.validate`).

`parse_arg` documents ValueError; `validate` documents ConfigError, and must raise it exactly
when a key is unknown or a value's type does not fit the schema.
"""
import glob
import importlib
import os

import ml_collections
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import common
from ie_jax.utils import config_check

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if 'def get_config(' in open(p, encoding='utf-8').read())
DEFAULTS = dict(iterations=2, mode='learned', lr=0.5, runlocal=False, name='')

tokens = st.sampled_from(['iterations', 'mode', 'lr', 'runlocal', 'name', 'examples', 'engine',
                          'compare', 'init', 'data_dir', 'descriptors', 'epochs', '', '='])
values = st.sampled_from(['', '1', '-3', '0x10', '1e3', 'nan', 'inf', 'true', 'False', 'random',
                          '\u0663', '1' * 5000, 'a=b', ' 7 ']) | st.text(max_size=12)
args = st.lists(st.tuples(tokens, st.sampled_from(['', '=']), values), max_size=4).map(
    lambda items: ','.join(name + sep + value for name, sep, value in items))


@FUZZ
@given(arg=st.none() | args | st.text(max_size=40))
def test_parse_arg_raises_only_value_error(arg):
  try:
    out = common.parse_arg(arg, **DEFAULTS)
  except ValueError:
    return
  assert set(out.keys()) == set(DEFAULTS)
  for name, default in DEFAULTS.items():
    assert type(out[name]) is type(default), (name, out[name])


@FUZZ
@given(module=st.sampled_from(CONFIGS), arg=st.none() | args)
def test_every_config_file_gives_a_valid_config_or_value_error(module, arg):
  get_config = importlib.import_module(f'configs.{module}').get_config
  try:
    config = get_config(arg)
  except ValueError:
    return
  config_check.validate(config, common.get_base_config())


def _leaves(config, prefix=()):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, prefix + (key,))
    else:
      yield prefix + (key,), value


BASE = common.get_base_config()
LEAVES = sorted(_leaves(BASE))
SECTIONS = sorted(k for k, v in BASE.items() if isinstance(v, ml_collections.ConfigDict))
any_value = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
             | st.lists(st.integers(), max_size=3) | st.tuples(st.integers())
             | st.dictionaries(st.sampled_from(['a', 'seed']), st.integers(), max_size=2))


def fits(value, want) -> bool:
  """The schema's documented rule: the reference's type; an int where a float is expected;
  a bool only for a bool."""
  if isinstance(want, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(want, bool)
  if isinstance(want, float):
    return isinstance(value, (int, float))
  return isinstance(value, type(want)) and not isinstance(value, dict)


def _with(path, value) -> ml_collections.ConfigDict:
  tree = BASE.to_dict()
  node = tree
  for key in path[:-1]:
    node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
  node[path[-1]] = value
  return ml_collections.ConfigDict(tree)


@FUZZ
@given(leaf=st.sampled_from(LEAVES), value=any_value)
def test_validate_refuses_exactly_the_values_of_the_wrong_type(leaf, value):
  path, want = leaf
  config = _with(path, value)
  if fits(value, want):
    config_check.validate(config, BASE)
  else:
    try:
      config_check.validate(config, BASE)
    except config_check.ConfigError as e:
      assert 'config.' + '.'.join(path) in str(e)
    else:
      raise AssertionError(f'{path} = {value!r} passed')


@FUZZ
@given(section=st.sampled_from([None] + SECTIONS),
       key=st.text('abcxyz_019', min_size=1, max_size=10),  # ConfigDict refuses dotted keys
       value=any_value)
def test_validate_refuses_unknown_keys_and_scalar_sections(section, key, value):
  if section is None:  # a whole section replaced by a scalar, list or empty dict
    config = _with((SECTIONS[len(key) % len(SECTIONS)],), value)
  elif key in BASE[section]:
    return
  else:
    config = _with((section, key), value)
  try:
    config_check.validate(config, BASE)
  except config_check.ConfigError:
    return
  # Only a section replaced by a dict of known keys of the right types may pass.
  assert section is None and isinstance(value, dict), (section, key, value)
