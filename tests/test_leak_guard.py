"""The test-leak guard: copies of a test image are refused, pictures that only share its
perceptual hash are not (bench/leak_guard.py measures both on a real world)."""
import io

import numpy as np
from PIL import Image, ImageEnhance

from ie_jax.testing.fault_server import TEST_IMAGE, picture
from ie_jax.web import dedup, phash, validate

LIMITS = validate.ImageLimits(min_side=32, short_side=128)


def png(image: Image.Image, fmt='PNG', **kwargs) -> bytes:
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


def guard() -> dedup.DedupIndex:
  index = dedup.DedupIndex()
  index.forbid_image(png(TEST_IMAGE), LIMITS)
  return index


def verdict(index, image_bytes):
  p = validate.process(image_bytes, LIMITS)
  return index.check(p.sha256, p.phash, p.thumb)


def test_copies_of_a_test_image_are_leaks():
  index = guard()
  copies = {
      'jpeg': png(TEST_IMAGE, 'JPEG', quality=50),
      'resized': png(TEST_IMAGE.resize((200, 150))),
      'crop 90%': png(phash.centre_crop(TEST_IMAGE, 0.9)),
      'crop 80%': png(phash.centre_crop(TEST_IMAGE, 0.8)),
      'brighter': png(ImageEnhance.Brightness(TEST_IMAGE).enhance(1.2)),
      'desaturated': png(ImageEnhance.Color(TEST_IMAGE).enhance(0.4)),
  }
  for name, data in copies.items():
    found = verdict(index, data)
    assert found is not None and found[0] == 'test_leak', name


def test_other_pictures_are_not_leaks():
  index = guard()
  for seed in range(20, 30):
    assert verdict(index, png(picture(seed))) is None, seed


def test_a_hash_match_with_another_picture_is_not_a_leak():
  """The false alarms the hash alone raised: the same pHash, a different picture."""
  rng = np.random.default_rng(0)
  mine = bytes(rng.integers(0, 256, 1024, dtype=np.uint8))
  other = bytes(rng.integers(0, 256, 1024, dtype=np.uint8))
  index = dedup.DedupIndex()
  index.forbid('a' * 64, 0x0F0F0F0F0F0F0F0F, mine)
  near = 0x0F0F0F0F0F0F0F0F ^ 0b111  # 3 bits away
  assert index.check('b' * 64, near, other) is None
  assert index.check('b' * 64, near, mine)[0] == 'test_leak'
  # Without a picture to compare, the hash alone decides, at the old 10 bits.
  assert index.check('b' * 64, near, None)[0] == 'test_leak'
  assert index.check('b' * 64, 0x0F0F0F0F0F0F0F0F ^ 0xFFF, None) is None  # 12 bits
  assert index.check('b' * 64, near, other, leaks=False) is None


def test_correlation_ignores_brightness_and_contrast():
  thumb = phash.thumbnail(TEST_IMAGE)
  brighter = phash.thumbnail(ImageEnhance.Contrast(TEST_IMAGE).enhance(0.6))
  assert phash.correlation(thumb, brighter)[0] > 0.95
  assert phash.correlation(thumb, phash.thumbnail(picture(3)))[0] < 0.9


def test_the_pictures_survive_a_restored_state():
  index = guard()
  restored = dedup.DedupIndex.from_state(index.state())
  restored.set_forbidden_thumbs(index.forbidden_thumbs())
  copies = {'crop': png(phash.centre_crop(TEST_IMAGE, 0.8)), 'other': png(picture(21))}
  for name, data in copies.items():
    assert verdict(restored, data) == verdict(index, data), name
  old_state = {**index.state(), 'leak_max_distance': 10}
  del old_state['leak_min_correlation']  # a state written before the picture check
  legacy = dedup.DedupIndex.from_state(old_state)
  assert legacy.leak_max_distance == 10 and legacy.forbidden_thumbs().shape == (3, 1024)
