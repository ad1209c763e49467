"""State the downloader keeps across iterations: what was kept, what is forbidden, what was tried.

Both classes serialise to plain JSON-able dicts (`state()` / `from_state()`), so the caller
decides where they live (next to the manifest, in the explorer's checkpoint item).
"""
import io

import numpy as np
import yarl
from PIL import Image

from ie_jax.web import phash as phash_lib
from ie_jax.web import records
from ie_jax.web import validate

_VERSION = 1
_CROPS = (0.9, 0.8)  # centre crops forbidden with each test image
_HASH_ONLY_DISTANCE = 10  # the leak threshold of the hash alone (no picture)


class DedupIndex:
  """Hashes of every image kept so far, and of the target's test images (never kept).

  Exact duplicates are found by the sha256 of the re-encoded JPEG: identical pixels give
  identical bytes whatever container, metadata or compression the source had. Near
  duplicates are found by perceptual-hash Hamming distance.

  Test-set leaks (docs/DECISIONS.md, "Test-leak guard"; bench/leak_guard.py): each test
  image is forbidden with its 90% and 80% centre crops; a download whose pHash is within
  `leak_max_distance` bits of one of them is a leak if its grey thumbnail also correlates
  with that one's at `leak_min_correlation` or more. The hash alone, at 10 bits, missed
  most crops and refused 91 of 21,939 unrelated emoji and icons (black silhouettes next to
  3D renders); hash and picture together catch the crops and refuse 3. A caller without
  the picture (`thumb` None) gets the hash alone at `_HASH_ONLY_DISTANCE`.

  Args:
    near_max_distance: a kept image within this many bits is a near duplicate.
    leak_max_distance: a forbidden image within this many bits is a leak candidate.
    leak_min_correlation: the thumbnail correlation that confirms a candidate.
  """

  def __init__(self, near_max_distance: int = 6, leak_max_distance: int = 16,
               leak_min_correlation: float = 0.9):
    self.near_max_distance = near_max_distance
    self.leak_max_distance = leak_max_distance
    self.leak_min_correlation = leak_min_correlation
    self._sha: set[str] = set()
    self._phash = phash_lib.PHashIndex()
    self._forbidden_sha: set[str] = set()
    self._forbidden_phash = phash_lib.PHashIndex()
    self._forbidden_thumbs: list[bytes] = []  # b'' where unknown (restored state)

  def __len__(self) -> int:
    return len(self._sha)

  def forbid(self, sha256: str, phash: int, thumb: bytes = b'') -> None:
    """Marks an image (e.g. a target test image) as one that must never be kept."""
    self._forbidden_sha.add(sha256)
    self._forbidden_phash.add(phash)
    self._forbidden_thumbs.append(thumb)

  def forbid_image(self, data: bytes, limits: validate.ImageLimits) -> None:
    """Forbids an encoded image and its centre crops, processed as a download would be."""
    processed = validate.process(data, limits)
    self.forbid(processed.sha256, processed.phash, processed.thumb)
    with Image.open(io.BytesIO(processed.jpeg)) as image:
      for keep in _CROPS:
        crop = phash_lib.centre_crop(image, keep)
        self._forbidden_phash.add(phash_lib.phash(crop))
        self._forbidden_thumbs.append(phash_lib.thumbnail(crop))

  def forbidden_thumbs(self) -> np.ndarray:
    """(forbidden hashes, 1024) uint8; zero rows where unknown. Kept apart from `state()`:
    a target's test split makes megabytes of them."""
    size = phash_lib.THUMB_SIDE ** 2
    return np.stack([np.frombuffer(t, np.uint8) if t else np.zeros(size, np.uint8)
                     for t in self._forbidden_thumbs]) if self._forbidden_thumbs else \
        np.zeros((0, size), np.uint8)

  def set_forbidden_thumbs(self, thumbs: np.ndarray) -> None:
    if len(thumbs) != len(self._forbidden_phash):
      raise ValueError(f'{len(thumbs)} thumbnails for {len(self._forbidden_phash)} '
                       'forbidden hashes.')
    self._forbidden_thumbs = [bytes(t) if t.any() else b'' for t in np.asarray(thumbs)]

  def check(self, sha256: str, phash: int, thumb: bytes | None = None, *,
            leaks: bool = True) -> tuple[str, str] | None:
    """`(reason, detail)` if the image must not be kept, else None.

    `thumb`: the download's `phash.thumbnail`, which confirms a test-leak candidate.
    `leaks=False` skips the test-leak check (done already, e.g. by the downloader).
    """
    if leaks:
      leak = self._leak(sha256, phash, thumb)
      if leak is not None:
        return 'test_leak', leak
    if sha256 in self._sha:
      return 'duplicate_sha256', ''
    hit = self._phash.nearest(phash)
    if hit is not None and hit[1] <= self.near_max_distance:
      return 'near_duplicate', f'phash {hit[1]} bits from {phash_lib.to_hex(hit[0])}'
    return None

  def _leak(self, sha256: str, phash: int, thumb: bytes | None) -> str | None:
    if sha256 in self._forbidden_sha:
      return 'identical to a test image'
    found, distances = self._forbidden_phash.within(phash, self.leak_max_distance)
    for i, d in sorted(zip(found.tolist(), distances.tolist()), key=lambda x: x[1]):
      known = self._forbidden_thumbs[i]
      if thumb and known:
        r = float(phash_lib.correlation(thumb, known)[0])
        if r >= self.leak_min_correlation:
          return f'phash {d} bits from a test image, thumbnail correlation {r:.2f}'
      elif d <= _HASH_ONLY_DISTANCE:
        return f'phash {d} bits from a test image (no picture to compare)'
    return None

  def add(self, sha256: str, phash: int) -> None:
    self._sha.add(sha256)
    self._phash.add(phash)

  def state(self) -> dict:
    return {
        'version': _VERSION,
        'near_max_distance': self.near_max_distance,
        'leak_max_distance': self.leak_max_distance,
        'leak_min_correlation': self.leak_min_correlation,
        'sha256': sorted(self._sha),
        'phash': [phash_lib.to_hex(h) for h in self._phash.hashes()],
        'forbidden_sha256': sorted(self._forbidden_sha),
        'forbidden_phash': [phash_lib.to_hex(h) for h in self._forbidden_phash.hashes()],
    }

  @classmethod
  def from_state(cls, state: dict) -> 'DedupIndex':
    _check_version(state, 'DedupIndex')
    # States from before the picture check: their hash-only threshold.
    index = cls(state['near_max_distance'], state['leak_max_distance'],
                state.get('leak_min_correlation', 1.0))
    index._sha = set(state['sha256'])
    index._phash = phash_lib.PHashIndex([phash_lib.from_hex(h) for h in state['phash']])
    index._forbidden_sha = set(state['forbidden_sha256'])
    index._forbidden_phash = phash_lib.PHashIndex(
        [phash_lib.from_hex(h) for h in state['forbidden_phash']])
    index._forbidden_thumbs = [b''] * len(index._forbidden_phash)
    return index


def url_key(url: str) -> str:
  """The cache key of a URL: scheme and host lower-cased, default port and fragment dropped."""
  try:
    return str(yarl.URL(url).with_fragment(None))
  except (ValueError, TypeError):
    return url


class UrlCache:
  """url -> the outcome of its last attempt, so a URL is fetched at most once.

  Transient failures (timeouts, connection errors, 429, 5xx) are not remembered: the next
  iteration may find the host back up.
  """

  def __init__(self):
    self._entries: dict[str, dict] = {}

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, url: str) -> dict | None:
    return self._entries.get(url_key(url))

  def put(self, record: records.Record) -> None:
    if records.is_transient(record.status) or record.status == 'duplicate_url':
      return
    self._entries[url_key(record.url)] = {
        'status': record.status, 'sha256': record.sha256, 'phash': record.phash,
        'width': record.width, 'height': record.height}

  def state(self) -> dict:
    return {'version': _VERSION, 'entries': self._entries}

  @classmethod
  def from_state(cls, state: dict) -> 'UrlCache':
    _check_version(state, 'UrlCache')
    cache = cls()
    cache._entries = dict(state['entries'])
    return cache


def _check_version(state: dict, what: str) -> None:
  if state.get('version') != _VERSION:
    raise ValueError(f'{what} state has version {state.get("version")!r}; '
                     f'this code reads version {_VERSION}.')
