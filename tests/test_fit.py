"""`train.fit`, the one MoCo v3 training loop every phase runs: its steps, logs, saves,
early end and NaN check, with a stand-in step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ie_jax import train
from ie_jax.utils import sharding


def batches(n):
  return iter([{'view1': np.zeros((8, 4, 4, 3), np.uint8),
                'view2': np.zeros((8, 4, 4, 3), np.uint8)}] * n)


def counting_step(losses):
  def step_fn(state, batch, rng):
    del batch, rng
    return state + 1, {'loss': jnp.float32(losses[int(state)])}
  return step_fn


def run(start, steps, available, losses=None, **kwargs):
  logged, saved = [], []
  state, done = train.fit(
      jnp.int32(start), counting_step(losses or [1.0] * 100), batches(available),
      sharding.make_mesh(), jax.random.key(0), start=start, steps=steps, log_every=3,
      on_log=lambda done, metrics: logged.append((done, float(metrics['loss']))),
      checkpoint_every=4, on_checkpoint=lambda done, state: saved.append((done, int(state))),
      **kwargs)
  return int(state), done, logged, saved


def test_steps_logs_and_saves_up_to_the_end():
  state, done, logged, saved = run(0, 10, 100)
  assert (state, done) == (10, 10)
  assert [d for d, _ in logged] == [3, 6, 9, 10]  # every 3, and the last
  assert saved == [(4, 4), (8, 8)]  # every 4 before the last: the end is the caller's


def test_a_resumed_loop_goes_on_from_its_start():
  state, done, logged, saved = run(5, 10, 100)
  assert (state, done) == (10, 10)
  assert [d for d, _ in logged] == [6, 9, 10]
  assert saved == [(8, 8)]


def test_an_iterator_that_ends_early_ends_the_loop():
  state, done, _, _ = run(0, 10, 7)
  assert (state, done) == (7, 7)
  assert run(4, 4, 100)[:2] == (4, 4)  # nothing left to do


def test_a_non_finite_loss_stops_at_the_next_log_step():
  losses = [1.0] * 4 + [np.nan] * 10
  with pytest.raises(FloatingPointError, match=r"Non-finite \['loss'\] at step 6"):
    run(0, 10, 100, losses=losses)
