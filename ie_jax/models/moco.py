"""MoCo v3: backbone + projector (online and momentum) and predictor (online).

The backbone is the paper's ResNet (`resnet.py`), or EfficientNet-Lite0
(`efficientnet_lite.py`), whose ImageNet weights the CPU demo starts from.

Parameters are one dict `{'encoder', 'projector', 'predictor'}`; the momentum branch holds
the `{'encoder', 'projector'}` part, so one module serves both branches.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ie_jax.models import efficientnet_lite, resnet

# PyTorch nn.Linear's default init, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
LINEAR_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')

MOMENTUM_PARTS = ('encoder', 'projector')
BACKBONES = ('resnet', 'efficientnet-lite0')


class MLP(nn.Module):
  """Two bias-free linear layers with BN+ReLU between; optional non-affine last BN.

  Names map to PyTorch's nn.Sequential indices: linear0=0, bn0=1, linear1=3, bn1=4.
  """
  hidden: int
  out: int
  last_bn: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Dense(self.hidden, use_bias=False, kernel_init=LINEAR_INIT, dtype=self.dtype,
                 name='linear0')(x)
    x = nn.relu(resnet.batch_norm(train, 'bn0', self.dtype)(x))
    x = nn.Dense(self.out, use_bias=False, kernel_init=LINEAR_INIT, dtype=self.dtype,
                 name='linear1')(x)
    if self.last_bn:
      # MoCo v3's projector ends in BatchNorm1d(affine=False).
      x = resnet.batch_norm(train, 'bn1', self.dtype, affine=False)(x)
    return x


class MoCoV3(nn.Module):
  """The MoCo v3 networks. `__call__` is the online branch, `target` the momentum branch."""
  depth: int = 50
  width: int = 64
  small_stem: bool = False
  dim: int = 256
  mlp_dim: int = 4096
  dtype: Any = jnp.float32
  backbone: str = 'resnet'  # or 'efficientnet-lite0' (depth, width, small_stem unused)

  def setup(self):
    if self.backbone == 'resnet':
      self.encoder = resnet.ResNet(self.depth, self.width, self.small_stem, self.dtype)
    elif self.backbone == 'efficientnet-lite0':
      self.encoder = efficientnet_lite.EfficientNetLite0(self.dtype)
    else:
      raise ValueError(f'Unknown backbone {self.backbone!r}; valid: {BACKBONES}.')
    self.projector = MLP(self.mlp_dim, self.dim, last_bn=True, dtype=self.dtype)
    self.predictor = MLP(self.mlp_dim, self.dim, last_bn=False, dtype=self.dtype)

  def __call__(self, x, train: bool = True):
    """Online branch: q = predictor(projector(encoder(x)))."""
    return self.predictor(self.target(x, train), train)

  def target(self, x, train: bool = True):
    """Momentum branch (applied with the momentum params): k = projector(encoder(x))."""
    return self.projector(self.encoder(x, train), train)

  def features(self, x):
    """Pooled backbone features with BN in eval mode: what rewards and probes use."""
    return self.encoder(x, train=False)


def build(model_config) -> MoCoV3:
  """Builds the model from `config.model`."""
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
  if model_config.dtype not in dtypes:
    raise ValueError(f'config.model.dtype must be one of {sorted(dtypes)}, '
                     f'got {model_config.dtype!r}.')
  if model_config.backbone not in BACKBONES:
    raise ValueError(f'config.model.backbone must be one of {BACKBONES}, got '
                     f'{model_config.backbone!r}.')
  return MoCoV3(depth=model_config.depth, width=model_config.width,
                small_stem=model_config.small_stem, dim=model_config.dim,
                mlp_dim=model_config.mlp_dim, dtype=dtypes[model_config.dtype],
                backbone=model_config.backbone)
