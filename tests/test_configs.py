"""Configs: every config builds and validates; bad keys and types fail naming the key."""
import importlib
import os
import subprocess
import sys

import ml_collections
import pytest

from configs import common
from ie_jax.utils import config_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
                 if f.endswith('.py') and f not in ('__init__.py', 'common.py', 'sweep.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_builds_and_validates(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config_check.validate(config, common.get_base_config())


def test_base_config_holds_the_paper_values():
  c = common.get_base_config()
  assert (c.train.batch_size, c.optim.base_lr, c.optim.schedule) == (224, 0.8, 'constant')
  assert (c.moco.momentum, c.moco.momentum_schedule, c.moco.crop_min) == (0.9985, 'constant', 0.2)
  assert (c.model.depth, c.model.dim, c.model.mlp_dim, c.moco.temperature) == (50, 256, 4096, 1.0)
  assert (c.optim.weight_decay, c.optim.momentum, c.optim.trust_coefficient) == (1e-6, 0.9, 1e-3)


def test_unknown_key_is_named():
  config = common.get_base_config()
  config.optim.lerning_rate = 0.1
  with pytest.raises(config_check.ConfigError, match=r'config\.optim\.lerning_rate'):
    config_check.validate(config, common.get_base_config())


def test_wrong_type_is_named():
  config = common.get_base_config()
  with config.ignore_type():
    config.train.batch_size = '224'
  with pytest.raises(config_check.ConfigError, match=r'config\.train\.batch_size must be int'):
    config_check.validate(config, common.get_base_config())
  config = common.get_base_config()
  config.moco = ml_collections.ConfigDict({'momentum': True})
  with pytest.raises(config_check.ConfigError, match=r'config\.moco\.momentum must be float'):
    config_check.validate(config, common.get_base_config())


def test_parse_arg_casts_and_rejects():
  arg = common.parse_arg('runlocal,steps=3', runlocal=False, steps=10, name='x')
  assert arg.runlocal is True and arg.steps == 3 and arg.name == 'x'
  with pytest.raises(ValueError, match="Unknown config argument 'step'"):
    common.parse_arg('step=3', steps=10)
  with pytest.raises(ValueError, match="'steps' must be int"):
    common.parse_arg('steps=three', steps=10)


@pytest.mark.parametrize('override,expected', [
    ('--config.train.batchsize=8', 'batchsize'),
    ('--config.train.batch_size=eight', 'batch_size'),
])
def test_launcher_rejects_bad_overrides_naming_the_key(tmp_path, override, expected):
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/tiny.py', f'--workdir={tmp_path}',
       override], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert expected in proc.stderr
  assert not os.listdir(tmp_path)  # failed before writing anything


def test_paper_configs_take_switches_and_sweeps_expand_to_commands():
  from configs import flowers, sweep
  config = flowers.get_config('engine=flickr,mode=random,iterations=3')
  assert (config.web.engine, config.concepts.mode, config.explore.iterations) == (
      'flickr', 'random', 3)
  assert config.target.name == 'oxford_flowers102'
  commands = sweep.commands(os.path.join(ROOT, 'configs', 'flowers.py'), '/runs/fl')
  assert len(commands) == 2
  assert '--config.concepts.mode=random' in commands[0]
  assert '--workdir=/runs/fl/mode=random' in commands[0]


def test_an_unknown_override_names_the_valid_keys_and_a_moved_key_its_new_name():
  base = common.get_base_config()
  config_check.check_overrides(['--config.reward.k=5', '--workdir=x', '--config=c.py'], base)
  with pytest.raises(config_check.ConfigError, match=r'It is config\.reward\.k now'):
    config_check.check_overrides(['--config.explore.reward_k=5'], base)
  with pytest.raises(config_check.ConfigError, match=r"at reward: \['embed_batch_size'"):
    config_check.check_overrides(['--config.reward.kk', '5'], base)
  with pytest.raises(config_check.ConfigError, match='at the top level'):
    config_check.check_overrides(['--config.rewards.k=1'], base)
  for old, new in config_check.MOVED.items():  # every new name exists, no old one does
    config_check.check_overrides([f'--config.{new}=1'], base)
    with pytest.raises(config_check.ConfigError):
      config_check.check_overrides([f'--config.{old}=1'], base)
