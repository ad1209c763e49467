"""Probe: checkpoints across device counts, the feature cache, follow mode, bad input."""
import csv
import functools
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from ie_jax import optim, train
from ie_jax.data import augment, target
from ie_jax.eval import features, probe
from ie_jax.models import moco
from ie_jax.utils import checkpoint, sharding


def tiny_config():
  return tiny.get_config('examples=48')  # 48 train and 48 test shapes, 6 classes


def tiny_state(config):
  model = moco.build(config.model)
  tx, _ = optim.build(config.optim, config.train.batch_size, total_steps=1)
  return model, jax.jit(lambda: train.create_train_state(jax.random.key(0), model, tx,
                                                         config.moco.image_size))()


def save(workdir, config, state, steps, num_devices):
  """Writes `state` at `steps` as pretrain does: meta holds the run's config."""
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), max_to_keep=None)
  for step in steps:
    ckpt.save(step, jax.device_put(state, sharding.replicated(mesh)),
              {'config': config.to_dict(), 'data_iter': {}})
  ckpt.close()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """One tiny state, and features computed from it directly (no checkpoint, no jit)."""
  config = tiny_config()
  model, state = tiny_state(config)
  images = target.load(config.target, 'test').source
  views = np.stack([augment.eval_transform(images[i], 32) for i in range(len(images))])
  want = jax.jit(functools.partial(train.embed_step, model=model))(state, views)
  return config, state, np.asarray(want)


@pytest.mark.parametrize('save_devices,load_devices', [(4, 1), (1, 4)])
def test_probe_across_device_counts(tmp_path, run, save_devices, load_devices):
  config, state, want = run
  save(tmp_path, config, state, [2], save_devices)
  mesh = sharding.make_mesh(jax.devices()[:load_devices])
  result = probe.probe(config, str(tmp_path), mesh=mesh, batch_size=20)  # 3 padded batches

  with np.load(features.cache_path(str(tmp_path), 2, 'test', config.target)) as cache:
    np.testing.assert_allclose(cache['features'], want, atol=1e-5)
    np.testing.assert_array_equal(cache['labels'], target.load(config.target, 'test').labels())
  with open(tmp_path / 'eval' / 'probe_2.json', encoding='utf-8') as f:
    assert json.load(f) == result
  assert result['run_name'] == tmp_path.name and result['step'] == 2
  assert (result['num_train'], result['num_test'], result['feature_dim']) == (48, 48, 64)
  assert result['metric'] == 'top-1 accuracy' and result['knn']['k'] == 20
  assert 0 <= result['linear']['value'] <= 1 and 0 <= result['knn']['value'] <= 1
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']  # nothing written there

  # Re-probing reads the cache: the checkpoint's arrays are not even restored.
  def no_restore(*args):
    raise AssertionError('restored although the features were cached')
  original, features.restore = features.restore, no_restore
  try:
    again = probe.probe(config, str(tmp_path), mesh=mesh, run_name='base')
  finally:
    features.restore = original
  assert again['run_name'] == 'base'
  assert again['linear'] == result['linear'] and again['knn'] == result['knn']


def test_follow_probes_each_new_checkpoint_once(tmp_path, run):
  config, state, _ = run
  save(tmp_path, config, state, [2, 4], 4)
  waits = []
  first = probe.follow(config, str(tmp_path), max_polls=2, poll_seconds=5,
                       sleep=waits.append)
  assert [r['step'] for r in first] == [2, 4] and waits == [5]

  save(tmp_path, config, state, [6], 4)  # the explorer saves another one
  second = probe.follow(config, str(tmp_path), max_polls=1)
  assert [r['step'] for r in second] == [6]
  with open(probe.curve_path(str(tmp_path)), newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['step']) for r in rows] == [2, 4, 6]
  # Identical weights at every step: identical numbers on the curve.
  assert len({(r['linear'], r['knn']) for r in rows}) == 1
  assert float(rows[0]['knn']) == first[0]['knn']['value']


def test_no_checkpoint_messages(tmp_path):
  config = tiny_config()
  with pytest.raises(features.EvalError, match=r'No checkpoint in .*found \[\]'):
    probe.probe(config, str(tmp_path))
  os.makedirs(tmp_path / 'checkpoints')
  with pytest.raises(features.EvalError, match=r'holds no saved step \(found \[\]\)'):
    probe.probe(config, str(tmp_path))
  assert probe.follow(config, str(tmp_path / 'not_yet'), max_polls=1) == []


def test_missing_step_and_other_architecture_messages(tmp_path, run):
  config, state, _ = run
  save(tmp_path, config, state, [2], 4)
  with pytest.raises(features.EvalError, match=r'No checkpoint at step 9 .*found steps \[2\]'):
    probe.probe(config, str(tmp_path), 9)
  wider = tiny_config()
  wider.model.width = 16
  with pytest.raises(features.EvalError,
                     match=r'another architecture than the config: found width=8 \(config: 16\)'):
    probe.probe(wider, str(tmp_path))


def test_target_without_test_split_message(tmp_path):
  config = tiny_config()
  config.target.name = 'folder'
  config.target.data_dir = str(tmp_path / 'data')
  for cls in ('cat', 'dog'):
    os.makedirs(tmp_path / 'data' / 'train' / cls)
    Image.new('RGB', (8, 8)).save(tmp_path / 'data' / 'train' / cls / 'a.png')
  with pytest.raises(features.EvalError,
                     match=r"needs a test split.*'folder'.*found neither\. Found in .*\['train'\]"):
    probe.probe(config, str(tmp_path / 'work'))
