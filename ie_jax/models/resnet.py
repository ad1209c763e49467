"""ResNet-18/50 in Flax Linen, laid out like torchvision.

Module names mirror torchvision's (`conv1`, `bn1`, `layer1_0/conv2`, `downsample_bn`, ...)
so that `convert.py` maps the official MoCo v3 PyTorch checkpoint one-to-one.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ie_jax.models.batch_norm import BatchNorm

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), an untruncated normal.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# depth -> (block kind, blocks per stage)
ARCHS = {
    18: ('basic', (2, 2, 2, 2)),
    50: ('bottleneck', (3, 4, 6, 3)),
}
EXPANSION = {'basic': 1, 'bottleneck': 4}


def conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
  # Explicit symmetric padding: Flax 'SAME' pads stride-2 convs asymmetrically,
  # which is not PyTorch's padding and breaks converted checkpoints.
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
      use_bias=False, kernel_init=CONV_INIT, dtype=dtype, name=name)


def batch_norm(train: bool, name: str, dtype: Any, zero_scale: bool = False,
               affine: bool = True) -> BatchNorm:
  # PyTorch BN: running = 0.9 * running + 0.1 * batch (unbiased variance), eps 1e-5. No
  # axis_name: under jit over a sharded global batch the statistics are already global
  # (SyncBN).
  return BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      use_scale=affine, use_bias=affine,
      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
      name=name)


class Block(nn.Module):
  """A basic (ResNet-18) or bottleneck (ResNet-50, stride on the 3x3) residual block."""
  kind: str
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    out_features = self.features * EXPANSION[self.kind]
    if self.kind == 'basic':
      y = conv(self.features, 3, self.stride, 'conv1', self.dtype)(x)
      y = nn.relu(batch_norm(train, 'bn1', self.dtype)(y))
      y = conv(self.features, 3, 1, 'conv2', self.dtype)(y)
      # zero_init_residual: each block starts as the identity (MoCo v3 builds torchvision
      # models with zero_init_residual=True).
      y = batch_norm(train, 'bn2', self.dtype, zero_scale=True)(y)
    else:
      y = conv(self.features, 1, 1, 'conv1', self.dtype)(x)
      y = nn.relu(batch_norm(train, 'bn1', self.dtype)(y))
      y = conv(self.features, 3, self.stride, 'conv2', self.dtype)(y)
      y = nn.relu(batch_norm(train, 'bn2', self.dtype)(y))
      y = conv(out_features, 1, 1, 'conv3', self.dtype)(y)
      y = batch_norm(train, 'bn3', self.dtype, zero_scale=True)(y)
    if self.stride != 1 or x.shape[-1] != out_features:
      x = conv(out_features, 1, self.stride, 'downsample_conv', self.dtype)(x)
      x = batch_norm(train, 'downsample_bn', self.dtype)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet backbone returning globally average-pooled features (the `fc` input).

  Attributes:
    depth: 18 or 50.
    width: channels of the first stage (64 in torchvision; tests use 8).
    small_stem: a 3x3 stride-1 stem without max-pool, for 32-px images (tests, CPU demo).
    dtype: compute dtype; parameters and BN statistics stay float32.
  """
  depth: int = 50
  width: int = 64
  small_stem: bool = False
  dtype: Any = jnp.float32

  @property
  def num_features(self) -> int:
    kind, _ = ARCHS[self.depth]
    return self.width * 8 * EXPANSION[kind]

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.depth not in ARCHS:
      raise ValueError(f'ResNet depth must be one of {sorted(ARCHS)}, got {self.depth}.')
    kind, stages = ARCHS[self.depth]
    x = x.astype(self.dtype)
    if self.small_stem:
      x = conv(self.width, 3, 1, 'conv1', self.dtype)(x)
    else:
      x = conv(self.width, 7, 2, 'conv1', self.dtype)(x)
    x = nn.relu(batch_norm(train, 'bn1', self.dtype)(x))
    if not self.small_stem:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(stages):
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = Block(kind, self.width * 2**i, stride, self.dtype, name=f'layer{i + 1}_{j}')(x, train)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
