"""The explorer's initial fine-tune on the target (`init.finetune_epochs` > 0): early
stopping on the SSL loss keeps the best epoch's state, and the explore run starts from it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from ie_jax import explore
from ie_jax.explore import setup as explore_setup
from ie_jax.data import pipeline, target as target_lib
from ie_jax.utils import sharding


def small_config(iterations=1, **init):
  config = tiny.get_config(f'iterations={iterations},examples=32')
  config.monitor.knn_examples = 0
  config.init.update(init)
  return config


def test_the_state_after_the_lowest_loss_epoch_is_returned():
  config = small_config(finetune_epochs=3)
  source = target_lib.load(config.target, 'train').source
  per_epoch = pipeline.steps_per_pass(len(source), 1, config.train.batch_size)
  epoch_losses = [3.0, 1.0, 2.0]  # the middle epoch is best: neither the first nor the last
  calls = []

  def step_fn(state, batch, rng):
    del rng
    assert batch['view1'].shape[0] == config.train.batch_size
    calls.append(None)
    loss = epoch_losses[(len(calls) - 1) // per_epoch]
    return {'steps': state['steps'] + 1}, {'loss': jnp.float32(loss)}

  best, losses = explore_setup.finetune(config, {'steps': jnp.int32(0)}, step_fn,
                                         sharding.make_mesh(), source, jax.random.key(0))
  assert losses == epoch_losses
  assert len(calls) == 3 * per_epoch
  assert int(best['steps']) == 2 * per_epoch  # the state after epoch 1, not epoch 2's


def test_a_diverged_fine_tune_says_so():
  config = small_config(finetune_epochs=3)
  source = target_lib.load(config.target, 'train').source
  per_epoch = pipeline.steps_per_pass(len(source), 1, config.train.batch_size)
  calls = []

  def step_fn(state, batch, rng):
    del batch, rng
    calls.append(None)
    return state, {'loss': jnp.float32(2.0 if len(calls) <= per_epoch else np.nan)}

  with pytest.raises(FloatingPointError, match='fine-tune diverged.*epoch 1'):
    explore_setup.finetune(config, {'steps': jnp.int32(0)}, step_fn, sharding.make_mesh(),
                            source, jax.random.key(0))


def test_a_target_smaller_than_a_batch_cannot_be_fine_tuned():
  config = small_config(finetune_epochs=1)
  source = target_lib.load(config.target, 'train').source
  with pytest.raises(ValueError, match='fewer images than one batch'):
    explore_setup.finetune(config, {'steps': jnp.int32(0)}, None, sharding.make_mesh(),
                            target_lib.Head(source, config.train.batch_size - 1),
                            jax.random.key(0))


def test_exploration_starts_from_the_fine_tuned_state_and_records_it(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  tuned = {}
  real_finetune = explore_setup.finetune

  def spy(*args, **kwargs):
    tuned['state'], tuned['losses'] = real_finetune(*args, **kwargs)
    return tuned['state'], tuned['losses']

  monkeypatch.setattr(explore_setup, 'finetune', spy)
  start = explore.run(small_config(finetune_epochs=2, iterations=0), workdir)
  losses = tuned['losses']
  assert len(losses) == 2 and all(np.isfinite(losses))
  per_epoch = pipeline.steps_per_pass(len(start.target.source), 1, 16)
  assert int(start.train_state.step) == (int(np.argmin(losses)) + 1) * per_epoch
  assert start.state.current['finetune_losses'] == losses

  def no_second_finetune(*unused_args, **unused_kwargs):
    raise AssertionError('a resumed run must not fine-tune again')

  monkeypatch.setattr(explore_setup, 'finetune', no_second_finetune)
  resumed = explore.Explorer(small_config(finetune_epochs=2, iterations=0), workdir)
  # The starting checkpoint holds exactly the fine-tuned state, and the first iteration
  # starts from it with the losses in its summary (`current` becomes history[0]).
  assert (resumed.state.iteration, resumed.state.phase, resumed.state.saves) == (0, 'sample', 1)
  for got, want in zip(jax.tree.leaves(resumed.train_state), jax.tree.leaves(tuned['state'])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert resumed.state.current['finetune_losses'] == losses
  resumed.run()  # already at its end: must neither fine-tune again nor change the state
  assert resumed.state.saves == 1
