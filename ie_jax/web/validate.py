"""Turns untrusted bytes into a small RGB JPEG, or says why not.

Decoding is restricted to JPEG, PNG, GIF and WebP, chosen by magic bytes rather than by the
server's Content-Type (servers lie) and never by Pillow's full plugin list (whose rarer
formats have had decompression bombs of their own, e.g. FITS, GHSA-whj4-6x5x-4v2j).
"""
import dataclasses
import hashlib
import io

import numpy as np
from PIL import Image

from ie_jax.web import phash as phash_lib
from ie_jax.web.records import Rejected

_MAGIC = (
    (b'\xff\xd8\xff', 'JPEG'),
    (b'\x89PNG\r\n\x1a\n', 'PNG'),
    (b'GIF87a', 'GIF'),
    (b'GIF89a', 'GIF'),
)
# The longest side a JPEG can have (Pillow refuses to encode more than libjpeg's 65,500).
_JPEG_MAX_SIDE = 65_500
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) only while its short
# side stays at least this many times the stored one. Drafting all the way down to the
# stored size cost 2 dB of mean PSNR (7 dB on some) on the bench's photos; at 2x it still
# cost 2 dB on the worst image. The antialiased resize after it hides what is left.
_DRAFT_MARGIN = 3
# EXIF orientation -> the transpose that shows the image upright.
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclasses.dataclass(frozen=True)
class ImageLimits:
  """What a kept image must satisfy, and how it is re-encoded.

  Attributes:
    min_side: the short side of the decoded image must be at least this.
    short_side: the short side is resized down to at most this (the long side follows).
    max_pixels: width*height declared in the header above this is a decompression bomb.
      Checked per call here rather than through `Image.MAX_IMAGE_PIXELS`, a process-wide
      global that other code (and other threads) may rely on.
    jpeg_quality: of the re-encoded JPEG.
  """
  min_side: int = 64
  short_side: int = 256
  max_pixels: int = 40_000_000
  jpeg_quality: int = 90


@dataclasses.dataclass(frozen=True)
class Processed:
  jpeg: bytes
  sha256: str
  phash: int
  width: int
  height: int
  thumb: bytes = b''  # phash.thumbnail, for the test-leak guard


def sniff(data: bytes) -> str | None:
  """The Pillow format name for `data`'s magic bytes, if it is one we decode."""
  for magic, name in _MAGIC:
    if data.startswith(magic):
      return name
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return 'WEBP'
  return None


def process(data: bytes, limits: ImageLimits) -> Processed:
  """Decodes, checks, converts, resizes and re-encodes one image.

  Raises:
    Rejected: with reason 'empty_body', 'unsupported_format', 'decompression_bomb',
      'too_small', 'bad_aspect', 'truncated' or 'decode_error'.
  """
  if not data:
    raise Rejected('empty_body')
  fmt = sniff(data)
  if fmt is None:
    raise Rejected('unsupported_format', f'starts with {data[:16]!r}')
  try:
    image = Image.open(io.BytesIO(data), formats=[fmt])
  except Image.DecompressionBombError as e:  # Pillow's own hard limit (2x MAX_IMAGE_PIXELS)
    raise Rejected('decompression_bomb', str(e)) from e
  except Exception as e:  # Pillow raises many types on corrupt headers
    raise Rejected('decode_error', f'{type(e).__name__}: {e}') from e
  with image:
    width, height = image.size
    if width * height > limits.max_pixels:
      raise Rejected('decompression_bomb', f'{width}x{height} > {limits.max_pixels} pixels')
    if min(width, height) < limits.min_side:
      raise Rejected('too_small', f'{width}x{height}, min side {limits.min_side}')
    # A 70,000 x 64 strip passes both checks above, then fails in the JPEG encoder.
    if max(width, height) * min(1.0, limits.short_side / min(width, height)) > _JPEG_MAX_SIDE:
      raise Rejected('bad_aspect', f'{width}x{height} stays over {_JPEG_MAX_SIDE} px long '
                     f'once its short side is {limits.short_side}')
    orientation = _orientation(image)
    try:
      rgb = _decode_rgb(image, limits.short_side)
    except Exception as e:  # corrupt data surfaces only when pixels are decoded
      reason = 'truncated' if _looks_truncated(e) else 'decode_error'
      raise Rejected(reason, f'{type(e).__name__}: {e}') from e
  rgb = _shrink(rgb, limits.short_side)
  if orientation is not None:  # after the resize, on 20x fewer pixels: the same image
    rgb = rgb.transpose(orientation)
  buffer = io.BytesIO()
  rgb.save(buffer, 'JPEG', quality=limits.jpeg_quality)
  jpeg = buffer.getvalue()
  return Processed(jpeg=jpeg, sha256=hashlib.sha256(jpeg).hexdigest(),
                   phash=phash_lib.phash(rgb), width=rgb.width, height=rgb.height,
                   thumb=phash_lib.thumbnail(rgb))


def _orientation(image: Image.Image) -> Image.Transpose | None:
  """The transpose that EXIF says shows `image` upright; None for none (or broken EXIF)."""
  try:
    return _ORIENTATIONS.get(image.getexif().get(0x0112))  # 0x0112: Orientation
  except Exception:  # a broken EXIF block should not cost an otherwise good image
    return None


def _decode_rgb(image: Image.Image, short_side: int) -> Image.Image:
  if image.format == 'JPEG':
    # Most of the decode time of a large photo goes on pixels that the resize averages
    # away; Pillow's draft picks the smallest DCT scale that is still >= the size asked.
    scale = _DRAFT_MARGIN * short_side / min(image.size)
    if scale < 1:
      image.draft('RGB', (round(image.width * scale), round(image.height * scale)))
  image.seek(0)  # animated GIF/PNG/WebP: the first frame
  image.load()
  return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
    # 16-bit and float greys: Pillow's convert('L') clips instead of rescaling.
    pixels = np.asarray(image, dtype=np.float64)
    top = max(float(pixels.max()), 1.0)
    scale = 255.0 / (65535.0 if top > 255 else 255.0)
    return Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8)).convert('RGB')
  has_alpha = image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info
  if has_alpha:
    # Transparent pixels hold arbitrary colours (often black); what a viewer shows, and
    # what the training crops should see, is the image over a white page.
    rgba = image.convert('RGBA')
    page = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(page, rgba).convert('RGB')
  if image.mode == 'RGB':
    return image  # convert() would copy it
  return image.convert('RGB')


def _shrink(image: Image.Image, short_side: int) -> Image.Image:
  short = min(image.size)
  if short <= short_side:
    return image
  size = (max(1, round(image.width * short_side / short)),
          max(1, round(image.height * short_side / short)))
  # Pillow scales every filter's kernel with the reduction, so all of them antialias. On the
  # bench's photos, against a full decode + LANCZOS (bench/download.py, 100 images):
  # HAMMING 31.40 dB at 13.2 ms of CPU per image, img2dataset's OpenCV INTER_AREA 31.47 dB
  # at 15.0; BICUBIC 32.36 dB but 15.3 ms; BOX 29.99 dB. HAMMING is the cheapest of
  # img2dataset's quality.
  return image.resize(size, Image.Resampling.HAMMING)


def _looks_truncated(error: Exception) -> bool:
  text = str(error).lower()
  return isinstance(error, (OSError, EOFError, SyntaxError)) and (
      'truncated' in text or 'broken data stream' in text or 'end of file' in text)
