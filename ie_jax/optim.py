"""LARS in MoCo v3's order, and the learning-rate and EMA-momentum schedules.

All derived quantities (the batch-scaled lr, total steps) are computed here from config
inputs, never stored in configs.
"""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


def _matrices(params):
  # MoCo v3 exempts BN and bias parameters (ndim <= 1) from weight decay and the trust ratio.
  return jax.tree.map(lambda p: p.ndim > 1, params)


def lars(learning_rate, weight_decay: float, momentum: float,
         trust_coefficient: float) -> optax.GradientTransformation:
  """LARS as in MoCo v3: wd -> trust ratio (both ndim > 1 only) -> momentum -> lr.

  `optax.lars` puts the lr before momentum, which differs once the lr changes, and
  masks nothing by default; this chain reproduces moco-v3's `moco/optimizer.py` rule:
  dp = g + wd*p; dp *= tc*|p|/|dp| (1 if either norm is 0); mu = m*mu + dp; p -= lr*mu.
  """
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=_matrices),
      optax.masked(optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient),
                   _matrices),
      optax.trace(decay=momentum, nesterov=False),
      optax.scale_by_learning_rate(learning_rate),
  )


def peak_learning_rate(optim_config, batch_size: int) -> float:
  """MoCo v3's linear scaling rule: lr = base_lr * batch / 256 (0.8 * 224/256 = 0.7)."""
  return optim_config.base_lr * batch_size / 256


def learning_rate(optim_config, batch_size: int, total_steps: int) -> optax.Schedule:
  """The paper's constant lr, or MoCo v3's linear warm-up + half-cosine per step."""
  peak = peak_learning_rate(optim_config, batch_size)
  if optim_config.schedule == 'constant':
    return optax.constant_schedule(peak)
  if optim_config.schedule == 'cosine':
    if total_steps <= 0:
      raise ValueError('A cosine lr schedule needs a positive number of total steps.')
    warmup = int(round(optim_config.warmup_fraction * total_steps))

    def schedule(step):
      step = jnp.asarray(step, jnp.float32)
      warm = peak * step / max(warmup, 1)
      cos = peak * 0.5 * (1 + jnp.cos(math.pi * (step - warmup) / max(total_steps - warmup, 1)))
      return jnp.where(step < warmup, warm, cos)
    return schedule
  raise ValueError(f"config.optim.schedule must be 'constant' or 'cosine', "
                   f'got {optim_config.schedule!r}.')


def ema_momentum(moco_config, total_steps: int):
  """The momentum encoder's schedule, step -> (m, 1 - m): the paper's constant 0.9985, or
  MoCo v3's cosine ramp to 1.

  Both are returned because 1 - m must not be computed in float32 from a float32 m:
  1 - fp32(0.9985) = 1.50001049e-3, not 1.5e-3, and the momentum params drifted 7e-6
  relative from PyTorch's (which computes 1 - m in float64 on the host) in two steps.
  Equal inputs give the same function object (see `build`).
  """
  return _ema_momentum(ml_collections.FrozenConfigDict(moco_config), total_steps)


def constant_momentum(m: float):
  """step -> (m, 1 - m) for a constant m, 1 - m computed on the host in float64."""
  pair = (np.float32(m), np.float32(1.0 - float(m)))
  return lambda step: (jnp.asarray(pair[0]), jnp.asarray(pair[1]))


@functools.lru_cache(maxsize=8)
def _ema_momentum(moco_config, total_steps: int):
  m0 = moco_config.momentum
  if moco_config.momentum_schedule == 'constant':
    return constant_momentum(m0)
  if moco_config.momentum_schedule == 'cosine':
    if total_steps <= 0:
      raise ValueError('A cosine momentum schedule needs a positive number of total steps.')
    gap = np.float32(1.0 - m0)  # in float64 on the host, then rounded once

    def schedule(step):
      one_minus_m = (0.5 * (1 + jnp.cos(math.pi * step / total_steps)) * gap).astype(
          jnp.float32)
      return 1 - one_minus_m, one_minus_m
    return schedule
  raise ValueError(f"config.moco.momentum_schedule must be 'constant' or 'cosine', "
                   f'got {moco_config.momentum_schedule!r}.')


def build(optim_config, batch_size: int, total_steps: int = 0):
  """Returns (optax transformation, lr schedule) from `config.optim`.

  Equal inputs give the same objects. `train.make_train_step` keys its jitted step on them,
  so a second run in one process (the demo's `compare`, a probe after training, the tests)
  reuses the compiled step instead of compiling it again.
  """
  return _build(ml_collections.FrozenConfigDict(optim_config), batch_size, total_steps)


@functools.lru_cache(maxsize=8)
def _build(optim_config, batch_size: int, total_steps: int):
  if optim_config.name != 'lars':
    raise ValueError(f"config.optim.name must be 'lars', got {optim_config.name!r}.")
  lr = learning_rate(optim_config, batch_size, total_steps)
  tx = lars(lr, optim_config.weight_decay, optim_config.momentum,
            optim_config.trust_coefficient)
  return tx, lr
