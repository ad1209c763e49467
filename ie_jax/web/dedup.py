"""State the downloader keeps across iterations: what was kept, what is forbidden, what was tried.

Both classes serialise to plain JSON-able dicts (`state()` / `from_state()`), so the caller
decides where they live (next to the manifest, in the explorer's checkpoint item).
"""
import yarl

from ie_jax.web import phash as phash_lib
from ie_jax.web import records
from ie_jax.web import validate

_VERSION = 1


class DedupIndex:
  """Hashes of every image kept so far, and of the target's test images (never kept).

  Exact duplicates are found by the sha256 of the re-encoded JPEG: identical pixels give
  identical bytes whatever container, metadata or compression the source had. Near
  duplicates and test-set leaks are found by perceptual-hash Hamming distance.

  Args:
    near_max_distance: a kept image within this many bits is a near duplicate.
    leak_max_distance: a test image within this many bits is a leak. Looser than the
      near-duplicate threshold: a false alarm costs one web image, a miss leaks the eval.
  """

  def __init__(self, near_max_distance: int = 6, leak_max_distance: int = 10):
    self.near_max_distance = near_max_distance
    self.leak_max_distance = leak_max_distance
    self._sha: set[str] = set()
    self._phash = phash_lib.PHashIndex()
    self._forbidden_sha: set[str] = set()
    self._forbidden_phash = phash_lib.PHashIndex()

  def __len__(self) -> int:
    return len(self._sha)

  def forbid(self, sha256: str, phash: int) -> None:
    """Marks an image (e.g. a target test image) as one that must never be kept."""
    self._forbidden_sha.add(sha256)
    self._forbidden_phash.add(phash)

  def forbid_image(self, data: bytes, limits: validate.ImageLimits) -> None:
    """Forbids an encoded image, hashed exactly as a download with these limits would be."""
    processed = validate.process(data, limits)
    self.forbid(processed.sha256, processed.phash)

  def check(self, sha256: str, phash: int) -> tuple[str, str] | None:
    """`(reason, detail)` if the image must not be kept, else None."""
    if sha256 in self._forbidden_sha:
      return 'test_leak', 'identical to a test image'
    hit = self._forbidden_phash.nearest(phash)
    if hit is not None and hit[1] <= self.leak_max_distance:
      return 'test_leak', f'phash {hit[1]} bits from test image {phash_lib.to_hex(hit[0])}'
    if sha256 in self._sha:
      return 'duplicate_sha256', ''
    hit = self._phash.nearest(phash)
    if hit is not None and hit[1] <= self.near_max_distance:
      return 'near_duplicate', f'phash {hit[1]} bits from {phash_lib.to_hex(hit[0])}'
    return None

  def add(self, sha256: str, phash: int) -> None:
    self._sha.add(sha256)
    self._phash.add(phash)

  def state(self) -> dict:
    return {
        'version': _VERSION,
        'near_max_distance': self.near_max_distance,
        'leak_max_distance': self.leak_max_distance,
        'sha256': sorted(self._sha),
        'phash': [phash_lib.to_hex(h) for h in self._phash.hashes()],
        'forbidden_sha256': sorted(self._forbidden_sha),
        'forbidden_phash': [phash_lib.to_hex(h) for h in self._forbidden_phash.hashes()],
    }

  @classmethod
  def from_state(cls, state: dict) -> 'DedupIndex':
    _check_version(state, 'DedupIndex')
    index = cls(state['near_max_distance'], state['leak_max_distance'])
    index._sha = set(state['sha256'])
    index._phash = phash_lib.PHashIndex([phash_lib.from_hex(h) for h in state['phash']])
    index._forbidden_sha = set(state['forbidden_sha256'])
    index._forbidden_phash = phash_lib.PHashIndex(
        [phash_lib.from_hex(h) for h in state['forbidden_phash']])
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
