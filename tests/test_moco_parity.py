"""Parity of our JAX MoCo v3 step with an independent PyTorch reference (fp32, CPU).

The reference (`ie_jax.testing.torch_moco`) is our own PyTorch implementation written from
the MoCo v3 description. Same weights and inputs must give the same loss (rel 1e-5), the
same gradients, and the same LARS + EMA update (rel 1e-4).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ie_jax import optim, train
from ie_jax.models import convert, moco

# The PyTorch reference: the `torch` extra (CI installs it).
torch = pytest.importorskip('torch')
from ie_jax.testing import torch_moco  # pylint: disable=g-import-not-at-top,wrong-import-position

LR, WD, MOMENTUM, TC, M, T = 0.7, 1e-6, 0.9, 1e-3, 0.99, 1.0
ONLINE = {'encoder': 'module.base_encoder.', 'projector': 'module.base_encoder.',
          'predictor': 'module.predictor.'}
MOMENTUM_PREFIX = {'encoder': 'module.momentum_encoder.',
                   'projector': 'module.momentum_encoder.'}


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def torch_like(tree, source: dict, prefixes: dict):
  """`source` (official torch names -> arrays) arranged like the Flax `tree`, converted."""
  def get(path, leaf):
    names = tuple(p.key for p in path)
    value = np.asarray(source[prefixes[names[0]] + convert.torch_key(names)])
    return convert.to_flax(names[-1], value)
  return jax.tree_util.tree_map_with_path(get, tree)


def assert_trees_close(ours, ref, rtol, what):
  flat_ours = jax.tree_util.tree_leaves_with_path(ours)
  flat_ref = jax.tree.leaves(ref)
  assert len(flat_ours) == len(flat_ref)
  for (path, a), b in zip(flat_ours, flat_ref):
    if not np.any(np.asarray(b)) and not np.any(np.asarray(a)):
      continue  # e.g. exact-zero gradients of zero-init residual branches
    err = rel_err(a, b)
    assert err < rtol, f'{what} {jax.tree_util.keystr(path)}: rel err {err:.2e}'


def make_pair(depth, small_stem, size, batch=8):
  torch.manual_seed(depth)
  ref = torch_moco.MoCoV3(depth=depth, width=8, small_stem=small_stem, dim=16, mlp_dim=32,
                          T=T)
  # Perturb BN affine params, running stats and the momentum weights, so that zero-init
  # gammas or equal branches cannot hide a wrong mapping or a wrong EMA.
  with torch.no_grad():
    # Small (not zero) residual branches, as after early training: keeps the deep net
    # well conditioned at batch 8, where fp32 rounding would otherwise be amplified.
    last_bns = {id(m.last_bn()) for m in ref.modules() if hasattr(m, 'last_bn')}
    for mod in ref.modules():
      if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
        if mod.affine:
          scale = 0.1 * torch.randn_like(mod.weight)
          mod.weight.copy_(scale if id(mod) in last_bns else 1 + 2 * scale)
          mod.bias.copy_(0.1 * torch.randn_like(mod.bias))
        mod.running_mean.copy_(0.1 * torch.randn_like(mod.running_mean))
        mod.running_var.copy_(1 + 0.1 * torch.rand_like(mod.running_var))
    for p in ref.momentum_encoder.parameters():
      p.add_(0.01 * torch.randn_like(p))
  official = {k: v.numpy().copy() for k, v in torch_moco.official_state_dict(ref).items()}

  model = moco.MoCoV3(depth=depth, width=8, small_stem=small_stem, dim=16, mlp_dim=32)
  tx = optim.lars(LR, WD, MOMENTUM, TC)
  state = train.create_train_state(jax.random.key(0), model, tx, size)
  state = state.replace(**jax.tree.map(jnp.asarray,
                                       convert.convert_state_dict(official, state)))
  state = state.replace(opt_state=tx.init(state.params))
  rng = np.random.RandomState(depth)
  x1 = rng.randn(batch, 3, size, size).astype(np.float32)
  x2 = rng.randn(batch, 3, size, size).astype(np.float32)
  return ref, model, tx, state, x1, x2


@pytest.mark.parametrize('depth,small_stem,size', [
    (18, True, 16), pytest.param(50, False, 32, marks=pytest.mark.slow)])
def test_loss_grads_and_update_match_pytorch(depth, small_stem, size):
  ref, model, tx, state, x1, x2 = make_pair(depth, small_stem, size)
  nhwc = lambda x: jnp.asarray(x.transpose(0, 2, 3, 1))

  # PyTorch: one step of the reference.
  ref.train()
  opt = torch_moco.LARS([p for p in ref.parameters() if p.requires_grad], lr=LR,
                        weight_decay=WD, momentum=MOMENTUM, trust_coefficient=TC)
  opt.zero_grad()
  loss_ref = ref(torch.from_numpy(x1), torch.from_numpy(x2), M)
  loss_ref.backward()
  grads_ref = {f'module.{k}': p.grad.numpy().copy() for k, p in ref.named_parameters()
               if p.grad is not None}
  opt.step()
  after = {k: v.detach().numpy().copy() for k, v in torch_moco.official_state_dict(ref).items()}

  # JAX: the same computation, first unfused (for the gradients), then the jitted step.
  loss, grads, _, _, _ = train.loss_and_grads(state, nhwc(x1), nhwc(x2),
                                              optim.constant_momentum(M)(0),
                                              model=model, temperature=T)
  assert rel_err(loss, loss_ref.item()) < 1e-5
  assert_trees_close(grads, torch_like(state.params, grads_ref, ONLINE), 1e-4, 'grad')

  before = jax.tree.map(np.asarray, state.params)
  new_state, metrics = train.train_step(
      state, {'view1': nhwc(x1), 'view2': nhwc(x2)}, jax.random.key(0), model=model, tx=tx,
      learning_rate=lambda s: LR, ema_momentum=optim.constant_momentum(M), temperature=T)
  assert rel_err(metrics['loss'], loss_ref.item()) < 1e-5
  # Compare the update itself, not the weights, so the tolerance is not diluted.
  delta = jax.tree.map(lambda a, b: np.asarray(a) - b, new_state.params, before)
  delta_ref = jax.tree.map(lambda a, b: a - b, torch_like(state.params, after, ONLINE), before)
  assert_trees_close(delta, delta_ref, 1e-4, 'update')
  assert_trees_close(new_state.momentum_params,
                     torch_like(state.momentum_params, after, MOMENTUM_PREFIX), 1e-6,
                     'momentum param')
  # Running statistics, variances included, everywhere: PyTorch tracks the unbiased batch
  # variance (n / (n - 1)), and so does `models/batch_norm.py`. The deepest maps are 1x1
  # to 4x4 here, and the heads' BatchNorm1d sees n = 8, where a biased variance would be
  # 14% off.
  for ours, prefixes in ((new_state.batch_stats, ONLINE),
                         (new_state.momentum_batch_stats, MOMENTUM_PREFIX)):
    ref_stats = torch_like(ours, after, prefixes)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(ref_stats)):
      names = [p.key for p in path]
      assert rel_err(a, b) < 1e-4, f'batch stat {names}'


def test_second_step_uses_lars_momentum():
  """Two steps: the second exercises the momentum buffer and the updated EMA."""
  ref, model, tx, state, x1, x2 = make_pair(18, True, 16)
  nhwc = lambda x: jnp.asarray(x.transpose(0, 2, 3, 1))
  opt = torch_moco.LARS([p for p in ref.parameters() if p.requires_grad], lr=LR,
                        weight_decay=WD, momentum=MOMENTUM, trust_coefficient=TC)
  for _ in range(2):
    opt.zero_grad()
    loss_ref = ref(torch.from_numpy(x1), torch.from_numpy(x2), M)
    loss_ref.backward()
    opt.step()
  after = {k: v.detach().numpy().copy() for k, v in torch_moco.official_state_dict(ref).items()}
  step = jax.jit(lambda s, b: train.train_step(
      s, b, jax.random.key(0), model=model, tx=tx, learning_rate=lambda _: LR,
      ema_momentum=optim.constant_momentum(M), temperature=T))
  start = jax.tree.map(np.asarray, state.params)
  batch = {'view1': nhwc(x1), 'view2': nhwc(x2)}
  for _ in range(2):
    state, metrics = step(state, batch)
  assert rel_err(metrics['loss'], loss_ref.item()) < 1e-5
  delta = jax.tree.map(lambda a, b: np.asarray(a) - b, state.params, start)
  delta_ref = jax.tree.map(lambda a, b: a - b, torch_like(state.params, after, ONLINE), start)
  assert_trees_close(delta, delta_ref, 1e-4, 'two-step update')
  assert_trees_close(state.momentum_params,
                     torch_like(state.momentum_params, after, MOMENTUM_PREFIX), 1e-6,
                     'two-step momentum param')


def test_ema_matches_pytorch_from_zero():
  """The EMA alone, on momentum params that start at 0 (as after a zero init), where it is
  all (1 - m) * online: with 1 - m computed in float32 from a float32 m, two steps at the
  paper's m = 0.9985 put them 7e-6 relative off PyTorch's, which computes 1 - m in float64."""
  ref, _, _, state, _, _ = make_pair(18, True, 16)
  m = 0.9985
  with torch.no_grad():
    for p in ref.momentum_encoder.parameters():
      p.zero_()
  momentum = jax.tree.map(jnp.zeros_like, state.momentum_params)
  for _ in range(2):
    ref.update_momentum_encoder(m)
    momentum = train.ema(momentum, state.params, *optim.constant_momentum(m)(0))
  after = {k: v.detach().numpy().copy() for k, v in torch_moco.official_state_dict(ref).items()}
  assert_trees_close(momentum, torch_like(momentum, after, MOMENTUM_PREFIX), 1e-6,
                     'momentum param')
