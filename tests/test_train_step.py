"""The jitted MoCo v3 step: sharding invariance, no retracing, and the embedding step."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ie_jax import optim, train
from ie_jax.models import moco
from ie_jax.utils import sharding

MODEL = moco.MoCoV3(depth=18, width=8, small_stem=True, dim=16, mlp_dim=32)
STATIC = dict(model=MODEL, learning_rate=lambda s: 0.7, temperature=1.0,
              ema_momentum=optim.constant_momentum(0.9985))


# One optimizer object for `run_steps`: `train.make_train_step` is memoised on its static
# arguments, so the tests that run steps on the same mesh share one compiled step.
TX = optim.lars(0.7, 1e-6, 0.9, 1e-3)


def fresh_state(tx):
  return train.create_train_state(jax.random.key(0), MODEL, tx, 16)


def batch(n=8, seed=0):
  rng = np.random.RandomState(seed)
  return {'view1': rng.randint(0, 256, (n, 16, 16, 3)).astype(np.uint8),
          'view2': rng.randint(0, 256, (n, 16, 16, 3)).astype(np.uint8)}


def run_steps(mesh, num_steps):
  step = train.make_train_step(mesh, tx=TX, **STATIC)
  state = jax.device_put(fresh_state(TX), sharding.replicated(mesh))
  history = []
  for i in range(num_steps):
    state, metrics = step(state, sharding.put_batch(batch(seed=i), mesh), jax.random.key(1))
    history.append(jax.device_get(metrics))
  return state, history, step


@pytest.mark.slow
def test_four_devices_equal_one_device_on_the_same_global_batch():
  assert len(jax.devices()) == 4, 'conftest.py should give 4 fake CPU devices'
  state1, hist1, _ = run_steps(sharding.make_mesh(jax.devices()[:1]), 2)
  state4, hist4, _ = run_steps(sharding.make_mesh(), 2)
  # BN sees the global batch under jit, so only the reduction order differs.
  for m1, m4 in zip(hist1, hist4):
    for k in m1:
      np.testing.assert_allclose(m4[k], m1[k], rtol=2e-5, err_msg=k)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state4), jax.tree.leaves(state1)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    # Floor the scale: the predictor's BN input is exactly zero-mean in exact arithmetic
    # (a linear map of the projector's non-affine BN output), so its running mean is ~1e-8.
    err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-2)
    assert err < 1e-4, f'{jax.tree_util.keystr(path)}: rel err {err:.1e}'
  # The state really was replicated over the 4 devices, the batch split over them.
  assert len(jax.tree.leaves(state4)[0].sharding.device_set) == 4


def test_three_steps_trace_once():
  mesh = sharding.make_mesh()
  tx = optim.lars(0.7, 1e-6, 0.9, 1e-3)

  def step_fn(state, batch, rng):
    return train.train_step(state, batch, rng, tx=tx, **STATIC)

  traced = chex.assert_max_traces(step_fn, n=1)
  repl = sharding.replicated(mesh)
  step = jax.jit(traced, in_shardings=(repl, sharding.batch_sharded(mesh), repl),
                 out_shardings=(repl, repl), donate_argnums=(0,))
  state = jax.device_put(fresh_state(tx), repl)
  for i in range(3):
    state, _ = step(state, sharding.put_batch(batch(seed=i), mesh), jax.random.key(1))
  assert int(state.step) == 3
  # And the factory's own jit compiled exactly once for three steps.
  _, _, made = run_steps(mesh, 3)
  assert made._cache_size() == 1


def test_metrics_are_a_flat_dict_of_finite_scalars():
  _, hist, _ = run_steps(sharding.make_mesh(), 1)
  assert set(hist[0]) == {'loss', 'lr', 'm', 'grad_norm', 'update_norm', 'param_norm'}
  assert all(np.ndim(v) == 0 and np.isfinite(v) for v in hist[0].values())
  assert hist[0]['m'] == pytest.approx(0.9985)
  # Symmetric InfoNCE scaled by 2T: near 2 * 2 * log(N) for an untrained model.
  assert hist[0]['loss'] == pytest.approx(4 * np.log(8), rel=0.1)


def test_momentum_params_never_pass_through_the_optimizer():
  """The EMA alone moves the momentum branch: with m = 1 it must not change at all."""
  mesh = sharding.make_mesh()
  tx = optim.lars(0.7, 1e-6, 0.9, 1e-3)
  static = dict(STATIC, ema_momentum=optim.constant_momentum(1.0))
  step = train.make_train_step(mesh, tx=tx, **static)
  state = jax.device_put(fresh_state(tx), sharding.replicated(mesh))
  before = jax.device_get(state.momentum_params)
  state, _ = step(state, sharding.put_batch(batch(), mesh), jax.random.key(1))
  chex.assert_trees_all_equal(jax.device_get(state.momentum_params), before)


def test_embed_step_is_normalised_eval_mode_and_sharded():
  mesh = sharding.make_mesh()
  tx = optim.lars(0.7, 1e-6, 0.9, 1e-3)
  state = jax.device_put(fresh_state(tx), sharding.replicated(mesh))
  embed = train.make_embed_step(mesh, model=MODEL)
  images = batch(n=8)['view1']
  feats = embed(state, sharding.put_batch(images, mesh))
  assert feats.shape == (8, MODEL.width * 8)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(feats), axis=1), 1.0, rtol=1e-5)
  assert feats.sharding.spec == jax.sharding.PartitionSpec('data')  # one process
  # BN in eval mode: an image's features do not depend on the rest of its batch.
  other = images.copy()
  other[4:] = 0
  feats2 = embed(state, sharding.put_batch(other, mesh))
  np.testing.assert_allclose(np.asarray(feats2)[:4], np.asarray(feats)[:4], rtol=1e-5)


def test_equal_configs_share_one_jitted_step_and_a_changed_one_does_not():
  """Runs in one process (compare mode, probes, tests) must get the same jitted step for
  equal configs, hence one compilation, and never a step built for other hyper-parameters."""
  mesh = sharding.make_mesh()
  optim_config = ml_collections.ConfigDict(dict(
      name='lars', base_lr=0.8, schedule='constant', warmup_fraction=0.0,
      weight_decay=1e-6, momentum=0.9, trust_coefficient=1e-3))
  moco_config = ml_collections.ConfigDict(dict(momentum=0.9985, momentum_schedule='constant'))

  def make(optim_config):
    tx, lr = optim.build(optim_config, 8)
    step = train.make_train_step(mesh, model=MODEL, tx=tx, learning_rate=lr,
                                 ema_momentum=optim.ema_momentum(moco_config, 0),
                                 temperature=1.0, augment=None)
    return tx, lr, step

  tx, lr, first = make(optim_config)
  _, _, again = make(ml_collections.ConfigDict(optim_config.to_dict()))  # equal, not same
  assert again is first
  optim_config.base_lr = 0.4  # changed after the first call: a new key, not a stale hit
  other_tx, other_lr, other = make(optim_config)
  assert other is not first and other_tx is not tx
  assert float(lr(0)) == pytest.approx(0.8 * 8 / 256)
  assert float(other_lr(0)) == pytest.approx(0.4 * 8 / 256)
  assert train.make_train_step(mesh, model=MODEL, tx=tx, learning_rate=lr,
                               ema_momentum=optim.ema_momentum(moco_config, 0),
                               temperature=0.5, augment=None) is not first
  assert train.make_embed_step(mesh, model=MODEL) is train.make_embed_step(mesh, model=MODEL)
