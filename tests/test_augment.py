"""Host-side geometric views and the generated target."""
import numpy as np
import pytest

from ie_jax.data import augment, shapes


@pytest.mark.parametrize('height,width', [(40, 40), (30, 90), (200, 20)])
def test_crop_boxes_stay_inside_with_the_requested_area(height, width):
  rng = np.random.default_rng(0)
  areas = []
  for _ in range(500):
    top, left, h, w = augment.crop_box(rng, height, width, (0.2, 1.0))
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    areas.append(h * w / (height * width))
  if height == width:  # the fallback centre crop only triggers for extreme shapes
    assert 0.15 < min(areas) < 0.3 and max(areas) > 0.9


def test_views_are_uint8_at_the_training_size_and_differ():
  images, _ = shapes.generate(1, 40)
  rng = np.random.default_rng(0)
  a = augment.random_resized_crop_flip(images[0], rng, 32, 0.2)
  b = augment.random_resized_crop_flip(images[0], rng, 32, 0.2)
  assert a.shape == b.shape == (32, 32, 3) and a.dtype == np.uint8
  assert not np.array_equal(a, b)


def test_eval_transform_resizes_the_short_side_and_centre_crops():
  image = np.zeros((100, 200, 3), np.uint8)
  image[:, 90:110] = 255  # a bright band at the centre
  out = augment.eval_transform(image, 56)
  assert out.shape == (56, 56, 3)
  # Short side 100 -> 64, long side 200 -> 128; the crop keeps the central band.
  assert out[:, 28].min() == 255 and out[:, 0].max() == 0


def test_shapes_are_deterministic_and_split_by_seed():
  a, la = shapes.generate(16, 32, seed=0)
  b, lb = shapes.generate(16, 32, seed=0)
  c, _ = shapes.generate(16, 32, seed=1)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, lb)
  assert not np.array_equal(a, c)
  assert set(la) <= set(range(len(shapes.CLASSES)))
