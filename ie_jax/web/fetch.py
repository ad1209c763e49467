"""One URL to bytes: HTTP(S) with redirects, retries, limits and the address guard, or a file.

Failures raise `records.Rejected` with a reason from `records.REASONS` (or `http_<code>`).
"""
import asyncio
import dataclasses
import os
import random
import time

import aiohttp
import yarl
from aiohttp import abc as aiohttp_abc

from ie_jax.web import api
from ie_jax.web import corpus
from ie_jax.web import host_slots
from ie_jax.web import ssrf
from ie_jax.web.records import Rejected

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Worth another try: the server said "later" or fell over. 501 and the 4xx are answers.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Content-Type values under which we still look at the bytes: servers that do not know
# (or do not say) what they are sending. Everything else must be image/* (not SVG).
_UNTYPED = frozenset({'', 'application/octet-stream', 'binary/octet-stream'})
_OPT_OUT = frozenset({'noai', 'noimageai', 'noindex', 'noimageindex'})
_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class FetchOptions:
  """Network limits and politeness.

  Attributes:
    concurrency: requests in flight at once, over all hosts.
    per_host: requests in flight at once to one host name, at first.
    max_per_host: the most a host's limit grows to while it answers in time; it halves on
      429, 503, and on timeouts and connection errors when they are half of the host's
      recent requests (`host_slots.py`). max_per_host = per_host: fixed.
    connect_timeout_s, read_timeout_s: for the TCP/TLS connect, and for the longest gap
      between two body chunks (a slow drip never ends a total-less read).
    total_timeout_s: for one request from first byte sent to last byte read.
    max_bytes: the byte cap on a body, checked against Content-Length and while streaming.
    max_redirects: redirects followed per attempt; each hop is checked by the guard.
    retries: extra attempts after a 408/429/5xx or a connection error.
    backoff_s: the first retry waits about this long (with jitter); it doubles each time.
    max_backoff_s: the longest single wait. A Retry-After above it ends the retries.
    allow_networks: refused-by-default networks that may be reached (tests: 127.0.0.1/32).
    file_roots: directories that file:// URLs may read from; empty disables file://.
    user_agent: sent with every request; say who you are, as Wikimedia asks.
    respect_opt_out: refuse images whose X-Robots-Tag says noai/noimageai/noindex/noimageindex.
    slow_factor, slow_min_s: a request running slow_factor x its host's median request time
      (and at least slow_min_s) gives its host slot back (`host_slots.py`); 0 disables.
    host_limits: (host, slots) for hosts that ask for fewer connections; they never give
      slots back. upload.wikimedia.org asks unidentified clients for at most 2.
  """
  concurrency: int = 64
  per_host: int = 8
  max_per_host: int = 32
  connect_timeout_s: float = 5.0
  read_timeout_s: float = 10.0
  total_timeout_s: float = 30.0
  max_bytes: int = 16 * 2**20
  max_redirects: int = 5
  retries: int = 2
  backoff_s: float = 0.5
  max_backoff_s: float = 30.0
  allow_networks: tuple[str, ...] = ()
  file_roots: tuple[str, ...] = ()
  user_agent: str = 'ie-jax/0.1 (research crawler; Internet Explorer reimplementation)'
  respect_opt_out: bool = True
  slow_factor: float = 4.0
  slow_min_s: float = 2.0
  host_limits: tuple[tuple[str, int], ...] = (('upload.wikimedia.org', 2),)


class _Retry(Rejected):
  """A failure worth another attempt, after at least `retry_after` seconds."""

  def __init__(self, reason: str, detail: str = '', retry_after: float | None = None):
    super().__init__(reason, detail)
    self.retry_after = retry_after


def new_session(options: FetchOptions,
                resolver: aiohttp_abc.AbstractResolver | None = None) -> aiohttp.ClientSession:
  """A session whose every connection goes through the address guard.

  Args:
    options: the limits and the guard's allow-list.
    resolver: where host names are looked up (default: the system's); every address it
      answers is checked by the guard, so a fake one (tests, benchmarks) cannot open it.
  """
  guard = ssrf.AddressGuard(options.allow_networks)
  connector = aiohttp.TCPConnector(
      limit=options.concurrency, limit_per_host=0, ttl_dns_cache=300,
      resolver=ssrf.GuardedResolver(guard, resolver))
  # No proxies from the environment (they would bypass the guard), no cookies (nothing
  # here logs in, and a cookie jar is state an attacker's redirects could write to).
  return aiohttp.ClientSession(
      connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
      headers={'User-Agent': options.user_agent, 'Accept': 'image/*'},
      timeout=aiohttp.ClientTimeout(total=None, sock_connect=options.connect_timeout_s,
                                    sock_read=options.read_timeout_s))


class Fetcher:
  """Fetches URLs through `session` under `options`' limits. One per run."""

  def __init__(self, session: aiohttp.ClientSession, options: FetchOptions, executor=None):
    self._session = session
    self._options = options
    self._executor = executor
    self._guard = ssrf.AddressGuard(options.allow_networks)
    self._roots = tuple(os.path.realpath(root) for root in options.file_roots)
    self._global = asyncio.Semaphore(options.concurrency)
    self._hosts = host_slots.Hosts(options.per_host, slow_factor=options.slow_factor,
                                   slow_min_s=options.slow_min_s,
                                   host_limits=options.host_limits,
                                   max_per_host=options.max_per_host)
    self._not_before: dict[str, float] = {}  # host -> monotonic time it asked us to wait for
    self._random = random.Random()

  async def fetch(self, url: str) -> bytes:
    """The body at `url`. Raises `Rejected`."""
    try:
      parsed = yarl.URL(url)
    except (ValueError, TypeError) as e:
      raise Rejected('invalid_url', str(e)) from e
    if parsed.scheme == 'file':
      return await self._read_file(parsed)
    if parsed.scheme not in ('http', 'https') or not _host(parsed):
      raise Rejected('invalid_url', f'scheme {parsed.scheme!r}, host {parsed.raw_host!r}')
    for attempt in range(self._options.retries + 1):
      try:
        return await self._follow(parsed)
      except _Retry as failure:
        wait = self._backoff(attempt, failure.retry_after)
        if attempt == self._options.retries or wait is None:
          raise Rejected(failure.reason, failure.detail) from None
        await asyncio.sleep(wait)
    raise AssertionError('unreachable')

  def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
    return api.backoff(attempt, retry_after, self._options.backoff_s,
                       self._options.max_backoff_s, self._random)

  async def _follow(self, url: yarl.URL) -> bytes:
    seen = {str(url)}
    for _ in range(self._options.max_redirects + 1):
      self._check_literal(url)
      body, location = await self._request(url)
      if location is None:
        return body
      try:
        url = url.join(yarl.URL(location))
      except (ValueError, TypeError) as e:
        raise Rejected('bad_redirect', f'Location {location[:200]!r}: {e}') from e
      if url.scheme not in ('http', 'https') or not _host(url):
        raise Rejected('bad_redirect', f'redirect to {str(url)[:200]}')
      if str(url) in seen:
        raise Rejected('redirect_limit', f'redirect loop back to {str(url)[:200]}')
      seen.add(str(url))
    raise Rejected('redirect_limit', f'more than {self._options.max_redirects} redirects')

  def _check_literal(self, url: yarl.URL) -> None:
    # Host names are checked by the session's resolver; IP literals never reach a resolver.
    address = ssrf.ip_literal(url.host or '')
    if address is not None and not self._guard.is_allowed(address):
      raise Rejected('ssrf_blocked', f'address {address}')

  async def _request(self, url: yarl.URL) -> tuple[bytes, str | None]:
    """One request: `(body, None)`, or `(b'', location)` for a redirect."""
    host = url.host or ''
    async with self._hosts[host].slot():
      delay = self._not_before.get(host, 0.0) - time.monotonic()
      if delay > 0:
        await asyncio.sleep(delay)
      async with self._global:
        try:
          async with asyncio.timeout(self._options.total_timeout_s):
            async with self._session.get(url, allow_redirects=False) as response:
              return await self._read_response(host, response)
        except Rejected:
          raise
        except TimeoutError as e:  # aiohttp's socket timeouts subclass it too
          raise Rejected('timeout', type(e).__name__) from e
        except aiohttp.ClientConnectorDNSError as e:
          if isinstance(e.os_error, ssrf.BlockedAddress):
            raise Rejected('ssrf_blocked', str(e.os_error)) from e
          raise Rejected('dns_error', str(e.os_error)) from e
        except (aiohttp.InvalidURL, UnicodeError) as e:
          # UnicodeError: a host name the resolver cannot encode; `_host` should have caught
          # it, but a name the IDNA codec rejects must never escape as a crash.
          raise Rejected('invalid_url', f'{type(e).__name__}: {e}'[:200]) from e
        except aiohttp.ClientPayloadError as e:
          raise Rejected('truncated', str(e)[:200]) from e
        except (aiohttp.ClientError, OSError) as e:
          raise _Retry('connection_error', f'{type(e).__name__}: {e}'[:200]) from e

  async def _read_response(self, host: str, response: aiohttp.ClientResponse):
    status = response.status
    if status in _REDIRECTS:
      location = response.headers.get('Location')
      if not location:
        raise Rejected('bad_redirect', f'{status} without Location')
      return b'', location
    if status not in (200, 203):
      if status in _RETRY_STATUSES:
        retry_after = api.parse_retry_after(response.headers.get('Retry-After'))
        if retry_after is not None:
          # The whole host asked for a pause, not just this URL.
          until = time.monotonic() + min(retry_after, self._options.max_backoff_s)
          self._not_before[host] = max(self._not_before.get(host, 0.0), until)
        raise _Retry(f'http_{status}', response.reason or '', retry_after)
      raise Rejected(f'http_{status}', response.reason or '')
    if self._options.respect_opt_out:
      directives = {d.strip().lower().rsplit(':', 1)[-1].strip()
                    for value in response.headers.getall('X-Robots-Tag', [])
                    for d in value.split(',')}
      if directives & _OPT_OUT:
        raise Rejected('opted_out', ','.join(sorted(directives & _OPT_OUT)))
    content_type = response.headers.get('Content-Type', '').split(';')[0].strip().lower()
    if content_type not in _UNTYPED and (
        not content_type.startswith('image/') or content_type.startswith('image/svg')):
      raise Rejected('bad_content_type', content_type[:100])
    cap = self._options.max_bytes
    if response.content_length is not None and response.content_length > cap:
      raise Rejected('too_large', f'Content-Length {response.content_length} > {cap}')
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
      size += len(chunk)
      if size > cap:
        raise Rejected('too_large', f'body over {cap} bytes')
      chunks.append(chunk)
    if not size:
      raise Rejected('empty_body')
    return b''.join(chunks), None

  async def _read_file(self, url: yarl.URL) -> bytes:
    if url.host not in (None, '', 'localhost'):
      raise Rejected('invalid_url', f'file URL with remote host {url.host!r}')
    path = os.path.realpath(url.path)
    # Only inside the configured roots: a search result must not be able to read the
    # user's own files (file:///home/me/.ssh/id_rsa) into a training shard.
    if not any(os.path.commonpath([path, root]) == root for root in self._roots):
      raise Rejected('file_not_allowed', 'outside the configured file roots')
    async with self._global:
      try:
        member = url.query.get('member')
        if member is not None:  # a webdataset tar shard of the local engine's corpus
          return await asyncio.get_running_loop().run_in_executor(
              self._executor, corpus.read_tar_member, path, member, self._options.max_bytes)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, _read_capped, path, self._options.max_bytes)
      except OSError as e:
        raise Rejected('file_error', f'{type(e).__name__}: {e.strerror}') from e


def _host(url: yarl.URL) -> str:
  """`url`'s host name, checked to be one a resolver can look up; raises `Rejected`.

  A name with an empty label ('bad..host'), a label over 63 characters or a broken
  punycode label ('xn--') passes URL parsing but makes the IDNA codec raise UnicodeError
  inside name resolution, which no network error handler expects. Checked on the first
  request and on every redirect hop (a server chooses the Location).
  """
  try:
    host = url.host or ''
    if host and ssrf.ip_literal(host) is None:
      encoded = host.rstrip('.').encode('idna')
      if len(encoded) > 253:
        raise UnicodeError('host name longer than 253 characters')
  except (UnicodeError, ValueError) as e:
    raise Rejected('invalid_url', f'host {url.raw_host!r}: {e}'[:200]) from e
  return host


def _read_capped(path: str, cap: int) -> bytes:
  with open(path, 'rb') as f:
    data = f.read(cap + 1)
  if len(data) > cap:
    raise Rejected('too_large', f'file over {cap} bytes')
  if not data:
    raise Rejected('empty_body')
  return data

