"""Decoding untrusted images: modes, orientation, animation, limits, and the perceptual hash."""
import io

import numpy as np
import pytest
from PIL import Image

from ie_jax.web import phash, validate
from ie_jax.web.records import Rejected

LIMITS = validate.ImageLimits(min_side=16, short_side=64, max_pixels=1_000_000)


def encode(image, fmt, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def decoded(processed):
  return Image.open(io.BytesIO(processed.jpeg))


def picture(seed, size=(160, 120)):
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
      size, Image.Resampling.BICUBIC)


def test_short_side_is_resized_and_reencoded_as_rgb_jpeg():
  out = validate.process(encode(picture(0, (200, 100)), 'PNG'), LIMITS)
  assert (out.width, out.height) == (128, 64)
  image = decoded(out)
  assert image.format == 'JPEG' and image.mode == 'RGB' and image.size == (128, 64)
  # Smaller than short_side: kept at its size.
  assert validate.process(encode(picture(0, (40, 30)), 'PNG'), LIMITS).width == 40


def test_exif_orientation_is_applied():
  image = Image.new('RGB', (80, 40), 'red')
  image.paste((0, 0, 255), (0, 0, 40, 40))  # left half blue
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 CW to display"
  out = decoded(validate.process(encode(image, 'JPEG', exif=exif), LIMITS))
  assert out.size == (40, 80)
  top = np.asarray(out)[5, 20]
  assert top[2] > 200 and top[0] < 60  # blue ends up on top


def test_transparency_goes_onto_white_and_modes_become_rgb():
  clear = Image.new('RGBA', (32, 32), (0, 0, 0, 0))
  for image in (clear, clear.convert('LA'), clear.convert('P')):
    fmt = 'PNG'
    out = np.asarray(decoded(validate.process(encode(image, fmt), LIMITS)))
    assert out.min() > 245, image.mode
  cmyk = Image.new('CMYK', (32, 32), (0, 255, 255, 0))  # red in CMYK
  pixel = np.asarray(decoded(validate.process(encode(cmyk, 'JPEG'), LIMITS)))[16, 16]
  assert pixel[0] > 200 and pixel[1] < 60
  deep = Image.fromarray(np.full((32, 32), 65535, dtype=np.uint16))  # 16-bit white
  assert np.asarray(decoded(validate.process(encode(deep, 'PNG'), LIMITS))).min() > 245


def test_animated_images_keep_the_first_frame():
  frames = [Image.new('RGB', (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
  for fmt in ('GIF', 'WEBP', 'PNG'):
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    pixel = np.asarray(decoded(validate.process(data, LIMITS)))[16, 16]
    assert pixel[0] > 200 and pixel[1] < 60, fmt


@pytest.mark.parametrize('data, reason', [
    (b'', 'empty_body'),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', 'unsupported_format'),
    (b'BM' + bytes(100), 'unsupported_format'),  # BMP is not on the list
    (b'\x89PNG\r\n\x1a\n' + bytes(40), 'decode_error'),
    (encode(Image.new('L', (2000, 1000)), 'PNG'), 'decompression_bomb'),
    (encode(Image.new('RGB', (15, 200)), 'PNG'), 'too_small'),
])
def test_bad_images_are_rejected_with_a_reason(data, reason):
  with pytest.raises(Rejected) as e:
    validate.process(data, LIMITS)
  assert e.value.reason == reason


def test_truncated_files_are_errors_not_grey_pixels():
  for fmt in ('JPEG', 'PNG'):
    data = encode(picture(1, (400, 300)), fmt)
    with pytest.raises(Rejected) as e:
      validate.process(data[:len(data) // 2], LIMITS)
    assert e.value.reason == 'truncated', (fmt, e.value.detail)


def test_the_global_pixel_limit_is_left_alone():
  before = Image.MAX_IMAGE_PIXELS
  with pytest.raises(Rejected):
    validate.process(encode(Image.new('L', (2000, 1000)), 'PNG'), LIMITS)
  assert Image.MAX_IMAGE_PIXELS == before


def test_phash_is_stable_under_copies_and_apart_for_different_images():
  base = picture(7, (320, 240))
  h = phash.phash(base)
  copies = [base.resize((160, 120)), base.convert('L'),
            Image.open(io.BytesIO(encode(base, 'JPEG', quality=40))),
            Image.fromarray(np.clip(np.asarray(base, int) + 20, 0, 255).astype(np.uint8))]
  assert max(phash.hamming(h, phash.phash(c)) for c in copies) <= 4
  others = [phash.phash(picture(seed, (320, 240))) for seed in range(20, 40)]
  assert min(phash.hamming(h, o) for o in others) > 12


def test_phash_index_finds_the_nearest():
  index = phash.PHashIndex()
  assert index.nearest(0) is None
  for h in (0b1111, 1 << 63, 0xFFFF_FFFF_FFFF_FFFF):
    index.add(h)
  for _ in range(2000):  # past the initial capacity
    index.add(0x5555_5555_5555_5555)
  assert index.nearest(0b0111) == (0b1111, 1)
  assert index.nearest(0xFFFF_FFFF_FFFF_FFFE) == (0xFFFF_FFFF_FFFF_FFFF, 1)
  assert len(index) == 2003 and phash.from_hex(phash.to_hex(1 << 63)) == 1 << 63
