"""The photometric half of the MoCo v3 views, on device inside the jitted step.

Colour jitter, grayscale, Gaussian blur and solarize are per-pixel or separable ops that cost
the accelerator little and the host CPU a lot, so they run in `train_step` through its
`augment` hook. Semantics follow torchvision / PIL as used by MoCo v3 (`moco/loader.py`,
`main_moco.py` augmentation1/2): images in [0, 1], clamped after each op.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from ie_jax.data.normalize import IMAGENET_MEAN, IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class ViewConfig:
  """Probabilities of one view's photometric ops (MoCo v3's asymmetric pair)."""
  jitter_p: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  grayscale_p: float = 0.2
  blur_p: float = 1.0
  blur_sigma: tuple = (0.1, 2.0)
  solarize_p: float = 0.0


VIEW1 = ViewConfig(blur_p=1.0, solarize_p=0.0)
VIEW2 = ViewConfig(blur_p=0.1, solarize_p=0.2)


def grayscale(x):
  # ITU-R 601-2 luma, as PIL's convert('L') and torchvision's rgb_to_grayscale.
  return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _blend(a, b, ratio):
  return jnp.clip(ratio * a + (1 - ratio) * b, 0, 1)


def adjust_brightness(x, factor):
  return jnp.clip(x * factor, 0, 1)


def adjust_contrast(x, factor):
  mean = jnp.mean(grayscale(x))
  return _blend(x, mean, factor)


def adjust_saturation(x, factor):
  return _blend(x, grayscale(x)[..., None], factor)


def _rgb_to_hsv(x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = jnp.max(x, axis=-1)
  minc = jnp.min(x, axis=-1)
  delta = maxc - minc
  safe = jnp.where(delta == 0, 1.0, delta)
  s = jnp.where(maxc == 0, 0.0, delta / jnp.where(maxc == 0, 1.0, maxc))
  rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
  h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(delta == 0, 0.0, (h / 6.0) % 1.0)
  return h, s, maxc


def _hsv_to_rgb(h, s, v):
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  i = i.astype(jnp.int32) % 6
  r = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [v, q, p, p, t], v)
  g = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [t, v, v, q, p], p)
  b = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [p, p, t, v, v], q)
  return jnp.stack([r, g, b], axis=-1)


def adjust_hue(x, shift):
  h, s, v = _rgb_to_hsv(x)
  return jnp.clip(_hsv_to_rgb((h + shift) % 1.0, s, v), 0, 1)


def gaussian_blur(x, sigma):
  """Separable Gaussian blur with edge clamping, as one matmul per axis.

  A per-image sigma makes per-image kernels; dense (S, S) blur matrices keep that a pair of
  batched matmuls, which accelerators do well, instead of a grouped convolution.
  """
  size = x.shape[0]
  pos = jnp.arange(size, dtype=jnp.float32)
  # Kernel radius ~3 sigma at the largest sigma; weights renormalised after clamping.
  offsets = jnp.arange(-8, 9, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (offsets / sigma) ** 2)
  weights = weights / jnp.sum(weights)
  src = jnp.clip(pos[:, None] + offsets[None, :], 0, size - 1).astype(jnp.int32)
  matrix = jnp.zeros((size, size), jnp.float32).at[
      jnp.repeat(jnp.arange(size), offsets.size), src.reshape(-1)].add(
          jnp.tile(weights, size))
  return jnp.einsum('ij,jkc,lk->ilc', matrix, x, matrix)


def solarize(x):
  # PIL ImageOps.solarize(threshold=128) on uint8: values >= 128 are inverted.
  return jnp.where(x >= 128 / 255, 1.0 - x, x)


def sample_params(rng, cfg: ViewConfig) -> dict:
  """Draws one image's random choices (kept apart from `apply` so tests can count them)."""
  keys = jax.random.split(rng, 10)
  u = lambda k, lo, hi: jax.random.uniform(k, (), minval=lo, maxval=hi)
  return {
      'jitter': jax.random.uniform(keys[0]) < cfg.jitter_p,
      # torchvision applies the four adjustments in a random order per image.
      'order': jax.random.permutation(keys[1], 4),
      'brightness': u(keys[2], 1 - cfg.brightness, 1 + cfg.brightness),
      'contrast': u(keys[3], 1 - cfg.contrast, 1 + cfg.contrast),
      'saturation': u(keys[4], 1 - cfg.saturation, 1 + cfg.saturation),
      'hue': u(keys[5], -cfg.hue, cfg.hue),
      'grayscale': jax.random.uniform(keys[6]) < cfg.grayscale_p,
      'blur': jax.random.uniform(keys[7]) < cfg.blur_p,
      'sigma': u(keys[8], *cfg.blur_sigma),
      'solarize': jax.random.uniform(keys[9]) < cfg.solarize_p,
  }


def apply_params(x, p: dict):
  """Applies drawn choices to one image in [0, 1], in MoCo v3's order."""
  ops = (lambda y: adjust_brightness(y, p['brightness']),
         lambda y: adjust_contrast(y, p['contrast']),
         lambda y: adjust_saturation(y, p['saturation']),
         lambda y: adjust_hue(y, p['hue']))
  jittered = x
  for i in range(4):
    jittered = jax.lax.switch(p['order'][i], ops, jittered)
  x = jnp.where(p['jitter'], jittered, x)
  x = jnp.where(p['grayscale'], jnp.repeat(grayscale(x)[..., None], 3, axis=-1), x)
  x = jnp.where(p['blur'], gaussian_blur(x, p['sigma']), x)
  return jnp.where(p['solarize'], solarize(x), x)


def augment_one(rng, image, cfg: ViewConfig):
  """One view of one uint8 image [H, W, 3] -> float32 in [0, 1]."""
  return apply_params(image.astype(jnp.float32) / 255.0, sample_params(rng, cfg))


def normalize(x):
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def moco_v3_views(rng, view1, view2):
  """The `train_step` augment hook: uint8 geometric views -> normalised MoCo v3 views."""
  k1, k2 = jax.random.split(rng)

  def one_view(key, images, cfg):
    keys = jax.random.split(key, images.shape[0])
    return normalize(jax.vmap(functools.partial(augment_one, cfg=cfg))(keys, images))
  return one_view(k1, view1, VIEW1), one_view(k2, view2, VIEW2)
