"""LARS in MoCo v3's order and the lr / momentum schedules, against NumPy re-derivations."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ie_jax import optim


def numpy_lars(params, grads_seq, lr_seq, wd, momentum, tc):
  params = {k: v.astype(np.float64) for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in params.items()}
  for grads, lr in zip(grads_seq, lr_seq):
    for k, p in params.items():
      dp = grads[k].astype(np.float64)
      if p.ndim > 1:
        dp = dp + wd * p
        pn, un = np.linalg.norm(p), np.linalg.norm(dp)
        dp = dp * (tc * pn / un if pn > 0 and un > 0 else 1.0)
      mu[k] = momentum * mu[k] + dp
      params[k] = p - lr * mu[k]
  return params


def test_lars_matches_moco_v3_rule_with_a_changing_lr():
  rng = np.random.RandomState(0)
  params = {'w': rng.randn(4, 3).astype(np.float32), 'b': rng.randn(3).astype(np.float32),
            'zero': np.zeros((2, 2), np.float32)}
  grads_seq = [{k: rng.randn(*v.shape).astype(np.float32) for k, v in params.items()}
               for _ in range(3)]
  lrs = [0.5, 0.25, 0.1]
  tx = optim.lars(lambda step: jnp.asarray(lrs)[step], 1e-2, 0.9, 1e-3)
  p = {k: jnp.asarray(v) for k, v in params.items()}
  state = tx.init(p)
  for grads in grads_seq:
    updates, state = tx.update({k: jnp.asarray(v) for k, v in grads.items()}, state, p)
    p = optax.apply_updates(p, updates)
  want = numpy_lars(params, grads_seq, lrs, 1e-2, 0.9, 1e-3)
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-5, atol=1e-7)


def optim_config(**overrides):
  c = ml_collections.ConfigDict(dict(name='lars', base_lr=0.8, weight_decay=1e-6, momentum=0.9,
                                     trust_coefficient=1e-3, schedule='constant',
                                     warmup_fraction=0.0))
  c.update(overrides)
  return c


def test_paper_learning_rate_is_0_8_times_224_over_256_constant():
  schedule = optim.learning_rate(optim_config(), batch_size=224, total_steps=0)
  for step in (0, 10, 10_000):
    assert float(schedule(step)) == pytest.approx(0.7)


def test_cosine_learning_rate_with_warmup():
  schedule = optim.learning_rate(optim_config(schedule='cosine', warmup_fraction=0.1),
                                 batch_size=256, total_steps=100)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.4)
  assert float(schedule(10)) == pytest.approx(0.8)
  assert float(schedule(55)) == pytest.approx(0.4, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_ema_momentum_constant_and_cosine():
  moco = ml_collections.ConfigDict(dict(momentum=0.9985, momentum_schedule='constant'))
  m, one_minus_m = optim.ema_momentum(moco, 0)(123)
  assert float(m) == pytest.approx(0.9985)
  # 1 - m is the float32 nearest 0.0015, not 1 - fp32(0.9985) = 1.50001049e-3.
  assert one_minus_m == np.float32(0.0015)
  assert np.float32(1) - np.float32(0.9985) != np.float32(0.0015)
  moco.momentum = 0.99
  moco.momentum_schedule = 'cosine'
  schedule = optim.ema_momentum(moco, 100)
  for step, gap in ((0, 0.01), (50, 0.005), (100, 0.0)):
    m, one_minus_m = schedule(step)
    assert float(m) == pytest.approx(1 - gap)
    assert float(one_minus_m) == pytest.approx(gap, rel=1e-6, abs=1e-12)


def test_bad_schedule_names_fail_with_the_key():
  with pytest.raises(ValueError, match='config.optim.schedule'):
    optim.learning_rate(optim_config(schedule='step'), 256, 10)
  with pytest.raises(ValueError, match='config.optim.name'):
    optim.build(optim_config(name='adamw'), 256, 10)
