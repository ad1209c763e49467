"""MoCo v3 training: the TrainState, the jitted update step and the embedding step.

The steps are pure functions of a `flax.struct` state. `make_train_step` and
`make_embed_step` bind the static pieces (model, optimizer, schedules) and jit them with
explicit shardings on the `('data',)` mesh.
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from ie_jax.data.normalize import to_model_input
from ie_jax.models import moco
from ie_jax.utils import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any                 # {'encoder', 'projector', 'predictor'}
  batch_stats: Any
  momentum_params: Any        # {'encoder', 'projector'}: EMA of the online params
  momentum_batch_stats: Any   # updated by the momentum branch's own forward passes
  opt_state: Any


def create_train_state(rng, model: moco.MoCoV3, tx: optax.GradientTransformation,
                       image_size: int) -> TrainState:
  """Random init; the momentum branch starts as a copy of the online one (as MoCo v3)."""
  variables = model.init(rng, jnp.zeros((2, image_size, image_size, 3), jnp.float32),
                         train=False)
  params, stats = variables['params'], variables['batch_stats']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=stats,
      # Copies, not aliases: the state is donated to the step, and XLA refuses to donate
      # one buffer twice.
      momentum_params=jax.tree.map(jnp.copy, {k: params[k] for k in moco.MOMENTUM_PARTS}),
      momentum_batch_stats=jax.tree.map(
          jnp.copy, {k: stats[k] for k in moco.MOMENTUM_PARTS}),
      opt_state=tx.init(params))


def contrastive_loss(q, k, temperature: float):
  """InfoNCE of q against all keys in the global batch, scaled by 2T as in MoCo v3."""
  q = q.astype(jnp.float32)
  k = k.astype(jnp.float32)
  # torch F.normalize: x / max(|x|, 1e-12).
  q = q / jnp.maximum(jnp.linalg.norm(q, axis=1, keepdims=True), 1e-12)
  k = k / jnp.maximum(jnp.linalg.norm(k, axis=1, keepdims=True), 1e-12)
  logits = q @ k.T / temperature
  # Under jit the batch is global, so the positives are the diagonal: no all_gather needed.
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))
  return loss * (2 * temperature)


def ema(momentum_params, params, m, one_minus_m):
  """MoCo v3's update of the momentum branch: p_m <- m * p_m + (1 - m) * p.

  `1 - m` comes from the schedule (`optim.ema_momentum`), computed where it is exact.
  """
  online = {key: params[key] for key in moco.MOMENTUM_PARTS}
  return jax.tree.map(lambda t, o: m * t + one_minus_m * o, momentum_params, online)


def loss_and_grads(state: TrainState, x1, x2, m, *, model: moco.MoCoV3, temperature: float):
  """Forward + backward of one MoCo v3 step, after the EMA at its start; `m` is the
  schedule's `(m, 1 - m)`.

  Returns (loss, grads, new online batch_stats, new momentum params, new momentum stats).
  Each view is its own batch in each branch (own BN statistics), and running statistics
  update once per view, in MoCo v3's order: online x1, x2, then momentum x1, x2.
  """
  momentum_params = ema(state.momentum_params, state.params, *m)

  def target(x, stats):
    k, new = model.apply({'params': momentum_params, 'batch_stats': stats}, x, True,
                         method=moco.MoCoV3.target, mutable=['batch_stats'])
    return jax.lax.stop_gradient(k), new['batch_stats']

  def online(params, stats, x):
    q, new = model.apply({'params': params, 'batch_stats': stats}, x, True,
                         mutable=['batch_stats'])
    return q, new['batch_stats']

  def loss_fn(params):
    q1, stats = online(params, state.batch_stats, x1)
    q2, stats = online(params, stats, x2)
    k1, momentum_stats = target(x1, state.momentum_batch_stats)
    k2, momentum_stats = target(x2, momentum_stats)
    loss = contrastive_loss(q1, k2, temperature) + contrastive_loss(q2, k1, temperature)
    return loss, (stats, momentum_stats)

  (loss, (stats, momentum_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  return loss, grads, stats, momentum_params, momentum_stats


def train_step(state: TrainState, batch, rng, *, model: moco.MoCoV3,
               tx: optax.GradientTransformation, learning_rate: Callable,
               ema_momentum: Callable, temperature: float,
               augment: Callable | None = None):
  """One MoCo v3 update. `batch` holds the two views, `{'view1', 'view2'}` (N, H, W, 3).

  Returns the new state and a flat dict of scalar metrics.
  """
  # A per-step key derived from the step count makes a resumed run draw the same numbers.
  rng = jax.random.fold_in(rng, state.step)
  x1, x2 = batch['view1'], batch['view2']
  if augment is not None:
    x1, x2 = augment(rng, x1, x2)
  x1, x2 = to_model_input(x1), to_model_input(x2)
  m = ema_momentum(state.step)  # (m, 1 - m)
  loss, grads, stats, momentum_params, momentum_stats = loss_and_grads(
      state, x1, x2, m, model=model, temperature=temperature)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=stats,
      momentum_params=momentum_params, momentum_batch_stats=momentum_stats,
      opt_state=opt_state)
  metrics = {
      'loss': loss,
      'lr': jnp.asarray(learning_rate(state.step), jnp.float32),
      'm': m[0],
      'grad_norm': optax.tree.norm(grads),
      'update_norm': optax.tree.norm(updates),
      'param_norm': optax.tree.norm(params),
  }
  return new_state, metrics


def check_finite(metrics: dict, step: int) -> None:
  """Fails loudly on a non-finite metric fetched at a log step."""
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    raise FloatingPointError(f'Non-finite {bad} at step {step}: {metrics}.')


def fit(state, step_fn: Callable, batches, mesh, rng, *, start: int, steps: int,
        log_every: int, on_log: Callable | None = None, checkpoint_every: int = 0,
        on_checkpoint: Callable | None = None, desc: str = 'moco v3'):
  """The one MoCo v3 training loop: steps `start + 1` .. `steps` of `step_fn` over `batches`.

  Every `log_every` steps and at the last, the metrics come to the host, are checked to be
  finite (`check_finite`: a diverged run stops there, whichever phase it is in) and go to
  `on_log(done, metrics)`. Every `checkpoint_every` steps before the last,
  `on_checkpoint(done, state)` saves what the caller needs to resume; the end is the
  caller's to save. An iterator that ends early (corrupt records were skipped) ends the
  loop. Returns `(state, steps done)`.
  """
  done = start
  for step in tqdm(range(start + 1, steps + 1), desc=desc, initial=start, total=steps,
                   disable=jax.process_index() > 0 or start >= steps):
    try:
      views = next(batches)
    except StopIteration:
      break
    state, metrics = step_fn(state, sharding.put_batch(views, mesh), rng)
    done = step
    if done % log_every == 0 or done == steps:
      metrics = jax.device_get(metrics)
      check_finite(metrics, done)
      if on_log is not None:
        on_log(done, metrics)
    if on_checkpoint is not None and checkpoint_every and done % checkpoint_every == 0 \
        and done < steps:
      on_checkpoint(done, state)
  return state, done


def embed_step(state: TrainState, images, *, model: moco.MoCoV3):
  """L2-normalised pooled backbone features of the online encoder, BN in eval mode."""
  feats = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                      to_model_input(images), method=moco.MoCoV3.features)
  return feats / jnp.maximum(jnp.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


# Cached on the static pieces (the mesh, model and temperature compare by value; the
# optimizer and schedules are the same objects for equal configs, `optim.build`): runs
# with equal configs in one process share one jitted function, hence one compilation.
@functools.lru_cache(maxsize=8)
def make_train_step(mesh, **static):
  """`train_step` jitted on `mesh`: state replicated and donated, batch split over 'data'."""
  repl = sharding.replicated(mesh)
  return jax.jit(functools.partial(train_step, **static),
                 in_shardings=(repl, sharding.batch_sharded(mesh), repl),
                 out_shardings=(repl, repl), donate_argnums=(0,))


@functools.lru_cache(maxsize=8)
def make_embed_step(mesh, *, model: moco.MoCoV3):
  """`embed_step` jitted on `mesh`: images split over 'data', features readable by every
  process (`sharding.gathered`)."""
  return jax.jit(functools.partial(embed_step, model=model),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.gathered(mesh))
