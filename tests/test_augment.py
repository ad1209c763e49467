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


def test_two_views_are_uint8_at_the_training_size_and_differ():
  images, _ = shapes.generate(4, 40)
  views = augment.two_views(images, np.random.default_rng(0), 32, 0.2)
  assert views['view1'].shape == views['view2'].shape == (4, 32, 32, 3)
  assert views['view1'].dtype == np.uint8
  assert not np.array_equal(views['view1'], views['view2'])


def test_shapes_are_deterministic_and_split_by_seed():
  a, la = shapes.generate(16, 32, seed=0)
  b, lb = shapes.generate(16, 32, seed=0)
  c, _ = shapes.generate(16, 32, seed=1)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, lb)
  assert not np.array_equal(a, c)
  assert set(la) <= set(range(len(shapes.CLASSES)))
