"""The web warm-up (`init.warmup_epochs` > 0), the demo's stand-in for ImageNet
pre-training: it reads only web records, trains epochs x batches steps, resumes after a
kill, and runs once per run; the explorer starts from its result."""
import builtins
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from ie_jax import explore, pretrain, warmup
from ie_jax.explore import setup as explore_setup
from ie_jax.utils import sharding
from ie_jax.web import local_index


class Killed(Exception):
  pass


def small_config(**init):
  config = tiny.get_config('iterations=0,examples=32')
  config.monitor.knn_examples = 0
  config.init.update(dict(warmup_epochs=2, warmup_images=32))
  config.init.update(init)
  config.checkpoint_every_steps = 2
  return config


@pytest.fixture(name='web')
def fixture_web(tmp_path):
  """A world-like directory: an indexed corpus of 48 images, and beside it a target
  folder and a ground truth that the warm-up must never read."""
  root = tmp_path / 'world'
  rng = np.random.default_rng(0)
  os.makedirs(root / 'corpus' / 'images')
  with open(root / 'corpus' / 'captions.jsonl', 'w', encoding='utf-8') as f:
    for i in range(48):
      pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / 'corpus' / 'images' / f'{i}.png')
      f.write(json.dumps({'file': f'images/{i}.png', 'caption': f'thing {i}'}) + '\n')
  os.makedirs(root / 'target' / 'train' / 'a')
  for i in range(4):
    Image.new('RGB', (40, 40)).save(root / 'target' / 'train' / 'a' / f'{i}.png')
  (root / 'ground_truth.json').write_text('{}')
  local_index.build(str(root / 'corpus'), str(root / 'index'), keyword_only=True,
                    progress=False)
  return root


@pytest.fixture(name='parts', scope='module')
def fixture_parts():
  """(mesh, jitted step, fresh state maker): one compile for the tests that share them."""
  mesh = sharding.make_mesh()
  _, state, step_fn = pretrain.build(small_config(), mesh, total_steps=0)
  initial = jax.device_get(state)
  return mesh, step_fn, lambda: jax.device_put(initial, sharding.replicated(mesh))


def counting(step_fn, calls, kill_at=None):
  def step(state, batch, rng):
    calls.append(None)
    if kill_at is not None and len(calls) == kill_at:
      raise Killed()
    return step_fn(state, batch, rng)
  return step


def test_it_trains_epochs_times_batches_on_a_uniform_sample_of_web_records_only(
    web, parts, tmp_path, monkeypatch):
  config = small_config()
  mesh, step_fn, fresh = parts
  state = fresh()
  before = jax.device_get(state)
  opened, real_open = [], builtins.open

  def spy_open(file, *args, **kwargs):
    opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else file)
    return real_open(file, *args, **kwargs)

  monkeypatch.setattr(builtins, 'open', spy_open)
  calls = []
  out = warmup.run(config, state, counting(step_fn, calls), mesh, str(tmp_path / 'warmup'),
                   str(web / 'index'))
  monkeypatch.setattr(builtins, 'open', real_open)

  assert len(calls) == 2 * (32 // 16)  # epochs x steps per epoch of the sample
  paths = [p for p in opened if isinstance(p, str)]
  images = {p for p in paths if p.endswith('.png')}
  corpus = os.path.realpath(web / 'corpus' / 'images')
  assert len(images) == 32 and all(p.startswith(corpus + os.sep) for p in images)
  assert not [p for p in paths if 'ground_truth' in p or
              p.startswith(os.path.realpath(web / 'target'))]
  # Handed on like a pre-trained checkpoint: new weights, step 0, fresh optimizer state.
  assert int(out.step) == 0
  for got, want in zip(jax.tree.leaves(out.opt_state), jax.tree.leaves(before.opt_state)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(out.params), jax.tree.leaves(before.params)))


def test_a_killed_warmup_resumes_and_a_finished_one_is_restored_not_repeated(
    web, parts, tmp_path):
  config = small_config()
  mesh, step_fn, fresh = parts
  index = str(web / 'index')
  whole = jax.device_get(warmup.run(config, fresh(), step_fn, mesh, str(tmp_path / 'a'), index))

  directory = str(tmp_path / 'b')
  calls = []
  with pytest.raises(Killed):  # dies in step 3, after the checkpoint of step 2
    warmup.run(config, fresh(), counting(step_fn, calls, kill_at=3), mesh, directory, index)
  calls.clear()
  resumed = warmup.run(config, fresh(), counting(step_fn, calls), mesh, directory, index)
  assert len(calls) == 2  # steps 3 and 4 only
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)

  again = warmup.run(config, fresh(), counting(step_fn, calls, kill_at=len(calls) + 1), mesh,
                     directory, index)  # any step would raise: none is taken
  for got, want in zip(jax.tree.leaves(again), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  other = small_config(warmup_images=16)
  with pytest.raises(warmup.WarmupError, match='other settings'):
    warmup.run(other, fresh(), step_fn, mesh, directory, index)


def test_the_explorer_starts_from_the_warmup_and_a_resumed_run_skips_it(
    tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = small_config(warmup_epochs=1, warmup_images=0, finetune_epochs=0)
  warmed = {}
  real_run = warmup.run

  def spy(*args, **kwargs):
    warmed['state'] = jax.device_get(real_run(*args, **kwargs))
    return warmed['state']

  monkeypatch.setattr(warmup, 'run', spy)
  start = explore.run(config, workdir)
  assert 'state' in warmed and os.path.isdir(warmup.directory(workdir))
  for got, want in zip(jax.tree.leaves(start.train_state), jax.tree.leaves(warmed['state'])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  def no_second_warmup(*unused_args, **unused_kwargs):
    raise AssertionError('a resumed run must not warm up again')

  monkeypatch.setattr(warmup, 'run', no_second_warmup)
  resumed = explore.Explorer(config, workdir)
  assert resumed.state.saves == 1
  for got, want in zip(jax.tree.leaves(resumed.train_state), jax.tree.leaves(warmed['state'])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_warmup_needs_a_local_corpus():
  config = small_config()
  config.world = ''
  with pytest.raises(ValueError, match='local web corpus'):
    explore_setup.warmup_index(config, '/nowhere')
