"""Property-based fuzzing of image validation: random bytes, and valid JPEG, PNG, GIF and WebP
files with their headers and bodies mutated. `validate.process` may only return a well-formed
`Processed` or raise `Rejected` with a known reason.
"""
import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ie_jax.web import records, validate

LIMITS = validate.ImageLimits(min_side=16, short_side=64, max_pixels=1_000_000)
FUZZ = settings(max_examples=500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _picture(mode: str, size=(96, 80)) -> Image.Image:
  rng = np.random.default_rng(7)
  coarse = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
  return coarse.resize(size, Image.Resampling.BICUBIC).convert(mode)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


VALID = {
    'jpeg': _encode(_picture('RGB'), 'JPEG', quality=80),
    'jpeg-progressive': _encode(_picture('RGB'), 'JPEG', progressive=True),
    'jpeg-cmyk': _encode(_picture('CMYK'), 'JPEG'),
    'png-rgb': _encode(_picture('RGB'), 'PNG'),
    'png-palette': _encode(_picture('P'), 'PNG', transparency=0),
    'png-16bit': _encode(_picture('L').convert('I;16'), 'PNG'),
    'png-la': _encode(_picture('LA'), 'PNG'),
    'gif-animated': _encode(_picture('P'), 'GIF', save_all=True,
                            append_images=[_picture('P').rotate(90)]),
    'webp-lossy': _encode(_picture('RGB'), 'WEBP', quality=70),
    'webp-lossless': _encode(_picture('RGBA'), 'WEBP', lossless=True),
}
MAGIC = [b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'GIF87a', b'GIF89a', b'RIFF\x00\x00\x00\x00WEBP']


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack('>I', len(data)) + kind + data
          + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))


def with_dimensions(data: bytes, width: int, height: int) -> bytes:
  """`data` with the width and height its header declares replaced (checksums kept valid)."""
  if data.startswith(b'\x89PNG'):
    ihdr = data[16:29]
    return (data[:8] + _png_chunk(b'IHDR', struct.pack('>II', width, height) + ihdr[8:])
            + data[33:])
  if data.startswith(b'GIF'):
    return data[:6] + struct.pack('<HH', width & 0xFFFF, height & 0xFFFF) + data[10:]
  if data.startswith(b'\xff\xd8'):
    sof = max(data.find(b'\xff\xc0'), data.find(b'\xff\xc2'))
    return data[:sof + 5] + struct.pack('>HH', height & 0xFFFF, width & 0xFFFF) + data[sof + 9:]
  return data  # WebP: left to the byte mutations


def mutate(data: bytes, edits) -> bytes:
  data = bytearray(data)
  for op, where, value in edits:
    i = where % (len(data) + 1)
    if op == 'flip' and i < len(data):
      data[i] ^= 1 << (value % 8)
    elif op == 'set' and i < len(data):
      data[i] = value % 256
    elif op == 'insert':
      data[i:i] = bytes([value % 256]) * (1 + value % 7)
    elif op == 'delete':
      del data[i:i + 1 + value % 64]
    elif op == 'truncate':
      del data[i:]
  return bytes(data)


def check(data: bytes) -> None:
  """`process` either keeps a sound image or rejects with a known reason; nothing else."""
  try:
    out = validate.process(data, LIMITS)
  except records.Rejected as e:
    assert records.is_reason(e.reason), e.reason
    return
  image = Image.open(io.BytesIO(out.jpeg))
  assert image.format == 'JPEG' and image.mode == 'RGB'
  assert image.size == (out.width, out.height)
  assert LIMITS.min_side <= min(image.size) <= LIMITS.short_side
  assert hashlib.sha256(out.jpeg).hexdigest() == out.sha256 and 0 <= out.phash < 2**64


@FUZZ
@given(data=st.binary(max_size=2048) | st.builds(lambda m, b: m + b, st.sampled_from(MAGIC),
                                                  st.binary(max_size=2048)))
def test_random_bytes_are_rejected_with_a_reason(data):
  check(data)


edits = st.lists(st.tuples(st.sampled_from(['flip', 'set', 'insert', 'delete', 'truncate']),
                           st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), edits=edits)
def test_mutated_images_give_an_image_or_a_reason(name, edits):
  check(mutate(VALID[name], edits))


@FUZZ
@given(name=st.sampled_from(sorted(VALID)), edits=st.lists(
    st.tuples(st.just('set'), st.integers(0, 40), st.integers(0, 255)), min_size=1, max_size=3))
def test_mutated_headers_give_an_image_or_a_reason(name, edits):
  check(mutate(VALID[name], edits))  # the first 40 bytes: magic, dimensions, flags


@FUZZ
@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')  # then refused
@given(name=st.sampled_from([n for n in sorted(VALID) if not n.startswith('webp')]),
       width=st.integers(0, 2**31 - 1) | st.integers(0, 70_000),
       height=st.integers(0, 2**31 - 1) | st.integers(0, 300))
def test_lying_dimensions_give_an_image_or_a_reason(name, width, height):
  check(with_dimensions(VALID[name], width, height))


@pytest.mark.parametrize('size', [(70_000, 64), (64, 70_000), (65_501, 16)])
def test_images_too_elongated_for_jpeg_are_rejected(size):
  # Under the pixel limit and above the minimum side, yet no JPEG can hold them.
  data = _encode(Image.new('L', size, 128), 'PNG')
  with pytest.raises(records.Rejected) as e:
    validate.process(data, validate.ImageLimits(min_side=16, short_side=64))
  assert e.value.reason == 'bad_aspect'
