"""A 64-bit DCT perceptual hash and an index that finds hashes within a Hamming distance.

pHash (a DCT of a 32x32 grey thumbnail, the sign of the 8x8 lowest frequencies against
their median) survives re-encoding, resizing and mild colour changes, which is what copies of
a target test image on the web look like; a byte hash catches none of those.
"""
import numpy as np
from PIL import Image

_SIZE, _LOW = 32, 8


def _dct_matrix(n: int) -> np.ndarray:
  k = np.arange(n)[:, None]
  x = np.arange(n)[None, :]
  return np.cos(np.pi * (2 * x + 1) * k / (2 * n))


_DCT = _dct_matrix(_SIZE)[:_LOW]  # only the rows for the frequencies that are kept
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))


def phash(image: Image.Image) -> int:
  """The 64-bit perceptual hash of `image` (any mode), as an int."""
  grey = image.convert('L').resize((_SIZE, _SIZE), Image.Resampling.BOX)
  pixels = np.asarray(grey, dtype=np.float64)
  low = (_DCT @ pixels @ _DCT.T).ravel()
  # The DC term is the mean brightness: excluded from the median so that a uniformly
  # brighter copy still hashes the same.
  bits = low > np.median(low[1:])
  return int(np.sum(_BIT_WEIGHTS[bits], dtype=np.uint64))


THUMB_SIDE = 32


def thumbnail(image: Image.Image) -> bytes:
  """A 32x32 grey thumbnail (1,024 bytes): what the test-leak guard compares a pHash
  match with, since a 64-bit hash alone confuses simple drawings on white."""
  return image.convert('L').resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX).tobytes()


def centre_crop(image: Image.Image, keep: float) -> Image.Image:
  """The central `keep` fraction of each side: the crops of a test image the guard forbids."""
  w, h = image.size
  dw, dh = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
  return image.crop((dw, dh, w - dw, h - dh))


def correlation(a: bytes, b) -> np.ndarray:
  """Pearson correlation of thumbnail `a` with each of `b` (bytes, or an (n, 1024) uint8
  array): invariant to brightness and contrast changes, high only for the same picture."""
  x = np.frombuffer(a, np.uint8).astype(np.float64)
  ys = np.atleast_2d(np.frombuffer(b, np.uint8) if isinstance(b, bytes) else b)
  ys = ys.astype(np.float64)
  x = x - x.mean()
  ys = ys - ys.mean(axis=1, keepdims=True)
  norms = np.linalg.norm(ys, axis=1) * np.linalg.norm(x)
  return np.where(norms > 0, ys @ x / np.maximum(norms, 1e-12), 0.0)


def to_hex(h: int) -> str:
  return f'{h:016x}'


def from_hex(s: str) -> int:
  return int(s, 16)


def hamming(a: int, b: int) -> int:
  return (a ^ b).bit_count()


class PHashIndex:
  """A growable set of 64-bit hashes queried by Hamming distance.

  A linear scan with NumPy popcounts: about 1 ms per query per million hashes on one core,
  which stays small next to a download for the ~1M images a full run keeps.
  """

  def __init__(self, hashes=()):
    self._data = np.zeros(max(1024, len(hashes)), dtype=np.uint64)
    self._n = 0
    for h in hashes:
      self.add(h)

  def __len__(self) -> int:
    return self._n

  def add(self, h: int) -> None:
    if self._n == len(self._data):
      self._data = np.concatenate([self._data, np.zeros_like(self._data)])
    self._data[self._n] = np.uint64(h)
    self._n += 1

  def nearest(self, h: int) -> tuple[int, int] | None:
    """`(hash, distance)` of the closest stored hash, or None when empty."""
    if not self._n:
      return None
    distances = np.bitwise_count(self._data[:self._n] ^ np.uint64(h))
    i = int(np.argmin(distances))
    return int(self._data[i]), int(distances[i])

  def within(self, h: int, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, distances) of every stored hash within `max_distance` bits of `h`."""
    distances = np.bitwise_count(self._data[:self._n] ^ np.uint64(h))
    found = np.flatnonzero(distances <= max_distance)
    return found, distances[found].astype(np.int64)

  def hashes(self) -> list[int]:
    return [int(h) for h in self._data[:self._n]]
