"""What goes into the downloader (`Job`) and what comes out of it (`Record`), with reasons.

Every job yields exactly one record. `Record.status` is 'ok' or one of the failure reasons in
`REASONS` (HTTP errors are the family `http_<code>`, e.g. 'http_404'), so the manifest and
the logs can count failures by cause.
"""
import dataclasses
import re

OK = 'ok'

# reason -> what it means. `is_reason` accepts these plus `http_<code>`.
REASONS = {
    'invalid_url': 'not a parsable http(s) or file URL with a host',
    'ssrf_blocked': 'the destination (or a redirect hop) resolves to a refused address',
    'file_not_allowed': 'a file:// URL outside the configured file roots (or none are set)',
    'file_error': 'a file:// URL that could not be read',
    'dns_error': 'the host name did not resolve',
    'connection_error': 'connection refused or reset, TLS failure, or a malformed response',
    'timeout': 'connect, read (gap between chunks) or total timeout',
    'redirect_limit': 'more redirects than allowed, or a redirect loop',
    'bad_redirect': 'a redirect without a usable Location (missing, or not http(s))',
    'opted_out': "the response's X-Robots-Tag forbids AI or image indexing use",
    'bad_content_type': 'the Content-Type header is not a raster image type',
    'too_large': 'Content-Length or the streamed body exceeds the byte cap',
    'empty_body': 'a 0-byte body',
    'truncated': 'the body ended before the image (or before Content-Length)',
    'unsupported_format': 'the bytes are not JPEG, PNG, GIF or WebP (e.g. HTML, SVG)',
    'decode_error': 'the image data is corrupt',
    'decompression_bomb': 'the declared pixel count exceeds the limit',
    'too_small': 'the short side is below the minimum',
    'bad_aspect': "so elongated that the stored image would exceed JPEG's 65,500-px side",
    'duplicate_url': 'the URL was already attempted (this run or an earlier one)',
    'duplicate_sha256': 'the re-encoded image is byte-identical to one already kept',
    'near_duplicate': 'the perceptual hash is within the threshold of one already kept',
    'test_leak': "the image matches one of the target's test images",
    'internal_error': 'a bug: an unexpected exception in this job (its type is in the detail)',
}
_HTTP = re.compile(r'http_[1-5]\d\d')

# Failures that say nothing permanent about the URL: they are retried within a run and not
# remembered by the URL cache, so a later iteration may try again.
TRANSIENT = frozenset({'dns_error', 'connection_error', 'timeout', 'http_408', 'http_429',
                       'internal_error'})


class Rejected(Exception):
  """A job failed for `reason` (a key of `REASONS` or `http_<code>`)."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


def is_reason(status: str) -> bool:
  return status in REASONS or bool(_HTTP.fullmatch(status))


def is_transient(status: str) -> bool:
  return status in TRANSIENT or (status.startswith('http_5') and bool(_HTTP.fullmatch(status)))


@dataclasses.dataclass(frozen=True)
class Job:
  """One URL to fetch, with the search that found it and the engine's caption (title)."""
  url: str
  query: str = ''
  concept: str = ''
  caption: str = ''


@dataclasses.dataclass
class Record:
  """The outcome of one job.

  Attributes:
    url, query, concept, caption: copied from the job.
    status: 'ok' or a reason (see `REASONS`).
    sha256: hex digest of `jpeg` (also set on duplicates: the digest they matched).
    phash: 16 hex digits of the 64-bit perceptual hash of the kept image.
    width, height: of the re-encoded image.
    jpeg: the re-encoded JPEG bytes; only for 'ok'.
    detail: a short human-readable explanation of a failure (never parsed).
    thumb: the image's grey thumbnail for the test-leak guard; never stored.
  """
  url: str
  query: str
  concept: str
  status: str
  sha256: str = ''
  phash: str = ''
  width: int = 0
  height: int = 0
  jpeg: bytes | None = None
  detail: str = ''
  thumb: bytes | None = None
  caption: str = ''

  def manifest_row(self) -> dict:
    """Everything but the image bytes, e.g. for a manifest or a log line."""
    row = dataclasses.asdict(self)
    del row['jpeg'], row['thumb']
    return row
