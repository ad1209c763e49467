"""`evaluate.compare_seeds`: every mode once per seed, in its own directory with its own seed,
and a report with each mode's mean and spread over the seeds."""
import json
import os

import numpy as np
import pytest

from configs import common
from ie_jax import session


def fake_summary(mode, seed):
  base = {'learned': 0.2, 'random': 0.05}[mode] + 0.01 * seed
  return {'mode': mode, 'probe': {'knn': 0.3 + 0.01 * seed},
          'world': {'precision': {str(i): {'stored': 10, 'relevant': 1, 'precision': base + i / 100}
                                  for i in range(3)},
                    'relevant_mass': {str(i): 0.1 * i for i in range(3)},
                    'web_relevant_share': 0.07, 'target': 'the test target'}}


def test_each_mode_runs_once_per_seed_and_the_report_has_mean_and_spread(tmp_path,
                                                                         monkeypatch):
  calls = []

  def run_one(config, workdir):
    calls.append((config.concepts.mode, config.seed, os.path.relpath(workdir, tmp_path),
                  config.evaluate.compare_modes, config.evaluate.compare_seeds))
    return fake_summary(config.concepts.mode, config.seed)
  monkeypatch.setattr(session, 'run_one', run_one)
  config = common.get_base_config()
  config.evaluate.compare_modes = 'learned,random'
  config.evaluate.compare_seeds = '3,4'
  runs = session.run(config, str(tmp_path))
  assert sorted(calls) == sorted([
      (m, s, os.path.join(f'seed-{s}', m), '', '') for m in ('learned', 'random')
      for s in (3, 4)])
  assert set(runs) == {(m, s) for m in ('learned', 'random') for s in (3, 4)}
  with open(tmp_path / 'report' / 'summary.json') as f:
    table = json.load(f)['by_mode']
  learned = [0.2 + 0.01 * s + 0.01 for s in (3, 4)]  # mean of the 3 iterations
  assert table['learned']['mean']['mean_precision'] == pytest.approx(np.mean(learned))
  assert table['learned']['std']['mean_precision'] == pytest.approx(np.std(learned))
  assert table['random']['mean']['knn'] == pytest.approx(0.335)
  page = (tmp_path / 'report' / 'index.html').read_text()
  assert 'mean +- sd' in page and 'seed-4/random/report/index.html' in page
  assert (tmp_path / 'report' / 'precision.png').exists()


def test_without_seeds_the_layout_is_unchanged(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(session, 'run_one', lambda config, workdir: calls.append(
      os.path.relpath(workdir, tmp_path)) or fake_summary(config.concepts.mode, 0))
  config = common.get_base_config()
  config.evaluate.compare_modes = 'learned,random'
  assert set(session.run(config, str(tmp_path))) == {'learned', 'random'}
  assert calls == ['learned', 'random']


def test_bad_seeds_say_so(tmp_path):
  config = common.get_base_config()
  config.evaluate.compare_modes = 'learned'
  config.evaluate.compare_seeds = '0,x'
  with pytest.raises(ValueError, match='comma-separated integers'):
    session.run(config, str(tmp_path))


def test_demo_config_seeds_argument():
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config('compare,seeds=3,seed=4')
  assert config.evaluate.compare_seeds == '4,5,6'
  assert demo.get_config('compare').evaluate.compare_seeds == ''
  with pytest.raises(ValueError, match='add compare'):
    demo.get_config('seeds=3')
