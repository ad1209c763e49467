"""On-device MoCo v3 photometric ops against NumPy / colorsys / PIL references."""
import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from ie_jax.data import photometric as ph


def image(seed=0, size=24):
  return np.random.RandomState(seed).rand(size, size, 3).astype(np.float32)


def test_brightness_contrast_saturation_match_torchvision_formulas():
  x = image()
  gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
  np.testing.assert_allclose(ph.adjust_brightness(x, 1.3), np.clip(x * 1.3, 0, 1), rtol=1e-6)
  want = np.clip(0.7 * x + 0.3 * gray.mean(), 0, 1)
  np.testing.assert_allclose(ph.adjust_contrast(x, 0.7), want, rtol=1e-5)
  want = np.clip(1.2 * x - 0.2 * gray[..., None], 0, 1)
  np.testing.assert_allclose(ph.adjust_saturation(x, 1.2), want, rtol=1e-5, atol=1e-6)


def test_hue_shift_matches_colorsys():
  x = image(1, 8)
  got = np.asarray(ph.adjust_hue(x, 0.07))
  for pixel, out in zip(x.reshape(-1, 3), got.reshape(-1, 3)):
    h, s, v = colorsys.rgb_to_hsv(*pixel)
    np.testing.assert_allclose(out, colorsys.hsv_to_rgb((h + 0.07) % 1.0, s, v), atol=1e-5)
  np.testing.assert_allclose(ph.adjust_hue(x, 0.0), x, atol=1e-5)


def test_solarize_matches_pil_on_uint8():
  u8 = (image(2) * 255).astype(np.uint8)
  want = np.asarray(ImageOps.solarize(Image.fromarray(u8), threshold=128))
  got = np.asarray(ph.solarize(u8.astype(np.float32) / 255)) * 255
  np.testing.assert_allclose(got, want, atol=1e-3)


def test_blur_is_close_to_pil_gaussian_blur_and_preserves_mean():
  u8 = (image(3, 48) * 255).astype(np.uint8)
  x = u8.astype(np.float32) / 255
  for sigma in (0.5, 1.5):
    got = np.asarray(ph.gaussian_blur(jnp.asarray(x), sigma)) * 255
    want = np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    # PIL approximates the Gaussian with box passes; interior pixels agree to a few levels.
    assert np.abs(got - want)[4:-4, 4:-4].mean() < 2.0
    assert abs(got.mean() - x.mean() * 255) < 1.0
  assert np.std(got) < np.std(x * 255)  # smoother than the input


@pytest.mark.parametrize('cfg,blur_p,solarize_p', [(ph.VIEW1, 1.0, 0.0), (ph.VIEW2, 0.1, 0.2)])
def test_view_probabilities_match_moco_v3(cfg, blur_p, solarize_p):
  keys = jax.random.split(jax.random.key(0), 4000)
  params = jax.vmap(lambda k: ph.sample_params(k, cfg))(keys)
  for name, p in (('jitter', 0.8), ('grayscale', 0.2), ('blur', blur_p), ('solarize', solarize_p)):
    assert abs(float(np.mean(params[name])) - p) < 0.025, name
  assert 0.1 <= float(params['sigma'].min()) and float(params['sigma'].max()) <= 2.0
  assert 0.6 <= float(params['brightness'].min()) and float(params['brightness'].max()) <= 1.4
  assert -0.1 <= float(params['hue'].min()) and float(params['hue'].max()) <= 0.1
  orders = np.asarray(params['order'])
  assert all(sorted(o) == [0, 1, 2, 3] for o in orders[:50])


def test_moco_v3_views_are_normalised_and_jit():
  rng = np.random.RandomState(0)
  v1 = rng.randint(0, 256, (4, 16, 16, 3)).astype(np.uint8)
  v2 = rng.randint(0, 256, (4, 16, 16, 3)).astype(np.uint8)
  a1, a2 = jax.jit(ph.moco_v3_views)(jax.random.key(0), v1, v2)
  assert a1.shape == a2.shape == (4, 16, 16, 3) and a1.dtype == jnp.float32
  lo = (0 - np.array(ph.IMAGENET_MEAN)) / np.array(ph.IMAGENET_STD)
  hi = (1 - np.array(ph.IMAGENET_MEAN)) / np.array(ph.IMAGENET_STD)
  assert np.all(np.asarray(a1) >= lo - 1e-5) and np.all(np.asarray(a1) <= hi + 1e-5)
  b1, _ = jax.jit(ph.moco_v3_views)(jax.random.key(0), v1, v2)
  np.testing.assert_array_equal(a1, b1)  # seeded
