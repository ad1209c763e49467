"""The Flax ResNet and MoCo v3 heads: sizes, layout and initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ie_jax.models import moco, resnet


def count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_resnet50_and_heads_have_the_reference_sizes():
  model = moco.MoCoV3()  # ResNet-50, dim 256, mlp 4096
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 224, 224, 3)),
                                             train=False))
  params = shapes['params']
  # torchvision resnet50 without its 2048x1000 fc: 25,557,032 - 2,049,000.
  assert count(params['encoder']) == 23_508_032
  # 2048*4096 + BN(4096) + 4096*256, no biases; the last BN has no affine parameters.
  assert count(params['projector']) == 2048 * 4096 + 2 * 4096 + 4096 * 256
  assert count(params['predictor']) == 256 * 4096 + 2 * 4096 + 4096 * 256
  assert 'bn1' in shapes['batch_stats']['projector']
  assert 'bn1' not in params['projector']
  assert 'bn1' not in params['predictor']  # no last BN in the predictor


def test_resnet18_size_and_zero_init_residual():
  model = resnet.ResNet(depth=18)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  assert count(variables['params']) == 11_176_512
  blocks = [k for k in variables['params'] if k.startswith('layer')]
  assert len(blocks) == 8
  for name in blocks:
    # Each block starts as the identity: the gamma of its last BN is zero.
    assert not np.any(variables['params'][name]['bn2']['scale'])
    assert np.all(variables['params'][name]['bn1']['scale'] == 1)


def test_small_stem_keeps_resolution_and_features_are_pooled():
  model = resnet.ResNet(depth=50, width=4, small_stem=True)
  x = jnp.ones((3, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert variables['params']['conv1']['kernel'].shape == (3, 3, 3, 4)
  out = model.apply(variables, x, train=False)
  assert out.shape == (3, model.num_features) == (3, 128)
  assert out.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_params():
  model = moco.MoCoV3(depth=18, width=8, small_stem=True, dim=16, mlp_dim=32,
                      dtype=jnp.bfloat16)
  variables = model.init(jax.random.key(0), jnp.ones((2, 16, 16, 3)), train=False)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  q = model.apply(variables, jnp.ones((2, 16, 16, 3)), train=False)
  assert q.dtype == jnp.bfloat16


def test_unknown_depth_is_a_clear_error():
  with pytest.raises(ValueError, match='depth must be one of'):
    resnet.ResNet(depth=34).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
