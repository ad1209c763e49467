"""Checkpoints: stop and resume is bit-identical; restore onto other device counts; bad input."""
import json
import os

import chex
import jax
import numpy as np
import pytest

from configs import tiny
from ie_jax import optim, pretrain, train
from ie_jax.models import moco
from ie_jax.utils import checkpoint, sharding


def read_metrics(workdir):
  with open(os.path.join(workdir, 'logs', 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {r['step']: {k: v for k, v in r.items() if k != 'images_per_s'} for r in rows}


def test_stop_and_resume_gives_bit_identical_metrics(tmp_path):
  config = tiny.get_config('epochs=2,examples=64')  # 4 steps per epoch, 8 in all
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  straight = pretrain.run(config, str(tmp_path / 'straight'))

  # The same run stopped after the first epoch's checkpoint, then started again.
  config_first = tiny.get_config('epochs=1,examples=64')
  config_first.log_every_steps = 2
  config_first.checkpoint_every_steps = 2
  pretrain.run(config_first, str(tmp_path / 'resumed'))
  resumed = pretrain.run(config, str(tmp_path / 'resumed'))

  want, got = read_metrics(tmp_path / 'straight'), read_metrics(tmp_path / 'resumed')
  assert sorted(got) == [2, 4, 6, 8]
  for step in (6, 8):  # after the restart
    assert got[step] == want[step], step
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(straight))
  assert checkpoint.Checkpointer(str(tmp_path / 'resumed' / 'checkpoints')).all_steps() == [4, 6, 8]


def small_state(model):
  tx = optim.lars(0.7, 1e-6, 0.9, 1e-3)
  return train.create_train_state(jax.random.key(0), model, tx, 16)


def abstract_on(mesh, state):
  repl = sharding.replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), state)


@pytest.mark.parametrize('save_devices,load_devices', [(4, 1), (1, 4)])
def test_restore_read_only_onto_another_device_count(tmp_path, save_devices, load_devices):
  model = moco.MoCoV3(depth=18, width=8, small_stem=True, dim=16, mlp_dim=32)
  save_mesh = sharding.make_mesh(jax.devices()[:save_devices])
  state = jax.device_put(small_state(model), sharding.replicated(save_mesh))
  writer = checkpoint.Checkpointer(str(tmp_path))
  writer.save(7, state, {'note': 'x'})
  writer.close()

  reader = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  load_mesh = sharding.make_mesh(jax.devices()[:load_devices])
  restored, meta = reader.restore(abstract_on(load_mesh, jax.eval_shape(lambda: state)))
  assert meta == {'note': 'x'}
  assert len(jax.tree.leaves(restored)[0].sharding.device_set) == load_devices
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  assert os.listdir(tmp_path) == ['7']  # read-only: nothing written


def test_other_architecture_fails_naming_the_parameter(tmp_path):
  writer = checkpoint.Checkpointer(str(tmp_path))
  writer.save(1, small_state(moco.MoCoV3(depth=18, width=8, small_stem=True, dim=16,
                                         mlp_dim=32)), {})
  wider = moco.MoCoV3(depth=18, width=16, small_stem=True, dim=16, mlp_dim=32)
  with pytest.raises(checkpoint.CheckpointError, match=r'params\.encoder\.\S+ of shape'):
    writer.restore(jax.eval_shape(lambda: small_state(wider)))
  deeper = moco.MoCoV3(depth=50, width=8, small_stem=True, dim=16, mlp_dim=32)
  with pytest.raises(checkpoint.CheckpointError, match='another architecture'):
    writer.restore(jax.eval_shape(lambda: small_state(deeper)))


def test_missing_checkpoints_are_clear_errors(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='No checkpoint directory'):
    checkpoint.Checkpointer(str(tmp_path / 'nope'), read_only=True)
  empty = checkpoint.Checkpointer(str(tmp_path / 'empty'))
  with pytest.raises(checkpoint.CheckpointError, match='No checkpoint found'):
    empty.restore(None)


class _Killed(BaseException):
  """Stands in for SIGKILL: nothing after it runs, no `except Exception` catches it."""


def test_a_kill_while_an_old_step_is_deleted_leaves_only_whole_steps(tmp_path, monkeypatch):
  # Orbax deletes a step past max_to_keep file by file; a kill in the middle used to leave
  # a numbered directory that listed as a step (with a warning on every listing after).
  model = moco.MoCoV3(depth=18, width=8, small_stem=True, dim=16, mlp_dim=32)
  state = small_state(model)
  writer = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1)
  writer.save(1, state, {'step': 1})
  unlink = os.unlink

  def unlink_then_die(*args, **kwargs):
    unlink(*args, **kwargs)
    raise _Killed

  monkeypatch.setattr(os, 'unlink', unlink_then_die)  # the first file deleted, then death
  with pytest.raises(_Killed):
    writer.save(2, state, {'step': 2})
  monkeypatch.undo()

  steps = sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit())
  assert steps == [2]
  resumed = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1)
  assert resumed.all_steps() == [2]
  restored, meta = resumed.restore(jax.eval_shape(lambda: state))
  assert meta == {'step': 2}
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  # The next save empties what the killed one left aside.
  resumed.save(3, state, {'step': 3})
  assert sorted(os.listdir(tmp_path)) == ['3']
