"""What every search backend shares: the Result type, errors, keys, and a polite JSON client.

The client paces requests, retries 429/5xx and connection failures with jittered exponential
backoff (never shorter than a Retry-After), and turns every failure into an `EngineError`
whose text has the engine's secrets replaced by '<redacted>'.
"""
import asyncio
import dataclasses
import email.utils
import json
import logging
import os
import random
import time
import urllib.parse
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class Result:
  """One search hit: an image URL, its title or caption, the engine, and its 0-based rank."""
  url: str
  title: str
  source: str
  rank: int


class EngineError(RuntimeError):
  """A search failed: HTTP error, exhausted retries, malformed JSON, or an API error.
  `status` is the HTTP status of an error response (None for other failures)."""

  def __init__(self, message: str, status: int | None = None):
    super().__init__(message)
    self.status = status


class QuotaExhausted(EngineError):
  """The API refuses for now (its quota or rate limit is spent): a Retry-After longer than
  the client waits, or 429 on every attempt. `reset_in_s` is the server's Retry-After, if
  it gave one."""

  def __init__(self, message: str, reset_in_s: float | None = None):
    super().__init__(message)
    self.reset_in_s = reset_in_s


class MissingKeyError(EngineError):
  """A backend's key is not in the environment."""


def env_key(var: str, engine: str) -> str:
  """The value of environment variable `var`, or a `MissingKeyError` naming it."""
  value = os.environ.get(var, '').strip()
  if not value:
    raise MissingKeyError(f'The {engine} engine needs an API key in the environment variable '
                          f'{var}; set it (it is never logged or checkpointed).')
  return value


@dataclasses.dataclass(frozen=True)
class HttpOptions:
  """How a backend talks to its API.

  Attributes:
    timeout_s: for one request, including reading the body.
    retries: extra attempts after 429, 5xx or a connection failure.
    backoff_s: the first retry waits about this long (with jitter); doubles each time.
    max_backoff_s: the longest wait; a longer Retry-After ends the search with an error.
    min_interval_s: the least time between two requests by this engine instance (e.g.
      1 s keeps Flickr under its 3,600 queries per hour).
    user_agent: sent with every request. Wikimedia requires a contactable one.
  """
  timeout_s: float = 30.0
  retries: int = 4
  backoff_s: float = 1.0
  max_backoff_s: float = 60.0
  min_interval_s: float = 0.0
  user_agent: str = 'ie-jax/0.1 (research; Internet Explorer reimplementation)'


class JsonClient:
  """Sends paced, retried requests for one engine and returns decoded JSON."""

  def __init__(self, engine: str, options: HttpOptions, secrets: tuple[str, ...] = ()):
    self.engine = engine
    self.options = options
    self._secrets = tuple(s for s in secrets if s)
    self._next_slot = 0.0
    self._random = random.Random()

  def session(self, headers: dict | None = None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={'User-Agent': self.options.user_agent, **(headers or {})},
        timeout=aiohttp.ClientTimeout(total=self.options.timeout_s), trust_env=True)

  def redact(self, text: str) -> str:
    for secret in self._secrets:
      for form in {secret, urllib.parse.quote(secret, safe=''), urllib.parse.quote_plus(secret)}:
        text = text.replace(form, '<redacted>')
    return text

  def add_secret(self, secret: str) -> None:
    """Redacts `secret` too (e.g. an access token obtained at run time)."""
    if secret and secret not in self._secrets:
      self._secrets += (secret,)

  def error(self, message: str, status: int | None = None) -> EngineError:
    return EngineError(self.redact(f'{self.engine}: {message}'), status)

  async def request(self, session: aiohttp.ClientSession, method: str, url: str, *,
                    params: dict | None = None, json_body: Any = None,
                    form: dict | None = None, headers: dict | None = None) -> Any:
    """The decoded JSON body of a 2xx response (`form`: a urlencoded body). Raises
    `EngineError`."""
    refusals = 0  # 429s: "too many requests" on every attempt means the quota is spent
    for attempt in range(self.options.retries + 1):
      await self._pace()
      retry_after, why = None, ''
      try:
        async with session.request(method, url, params=params, json=json_body, data=form,
                                   headers=headers) as response:
          body = await response.read()
          refusals += response.status == 429
          if response.status in _RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get('Retry-After'))
            why = f'HTTP {response.status}'
          elif response.status >= 400:
            raise self.error(f'HTTP {response.status}: {_snippet(body)}', response.status)
          else:
            try:
              return json.loads(body)
            # ValueError: bad JSON or UTF-8, or an integer past Python's 4,300-digit limit;
            # RecursionError: arrays or objects nested a few thousand deep.
            except (ValueError, RecursionError) as e:
              raise self.error(f'malformed JSON ({str(e)[:200]}): {_snippet(body)}') from None
      except (aiohttp.ClientError, TimeoutError) as e:
        # The exception text may hold the request URL, and with it a key: log the type only.
        why = f'{type(e).__name__}: {self.redact(str(e))}'
      wait = self._backoff(attempt, retry_after)
      if wait is None or (attempt == self.options.retries and refusals == attempt + 1):
        raise QuotaExhausted(
            self.redact(f'{self.engine}: {why} on {refusals} of {attempt + 1} attempts'
                        + (f', Retry-After {retry_after:.0f} s' if retry_after else '')),
            retry_after)
      if attempt == self.options.retries:
        raise self.error(f'giving up after {attempt + 1} attempts ({why})')
      log.warning('%s: %s; retrying in %.1f s.', self.engine, why, wait)
      await asyncio.sleep(wait)
    raise AssertionError('unreachable')

  async def sleep_backoff(self, attempt: int) -> None:
    """Waits as a retry after `attempt` would (for APIs that report errors in the body)."""
    wait = self._backoff(attempt, None)
    log.warning('%s: retrying in %.1f s.', self.engine, wait)
    await asyncio.sleep(wait)

  async def _pace(self) -> None:
    now = time.monotonic()
    slot = max(now, self._next_slot)
    self._next_slot = slot + self.options.min_interval_s
    if slot > now:
      await asyncio.sleep(slot - now)

  def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
    return backoff(attempt, retry_after, self.options.backoff_s, self.options.max_backoff_s,
                   self._random)


def backoff(attempt: int, retry_after: float | None, first_s: float, max_s: float,
            rng: random.Random) -> float | None:
  """Seconds to wait before retry `attempt + 1`, or None to give up.

  Exponential from `first_s`, capped at `max_s`, with "equal jitter": never less than half
  the step, so a crowd of retries spreads out without any of them coming straight back;
  never shorter than the server's Retry-After, and None when that is above `max_s`
  (waiting less than the server asked would only earn another 429). The one backoff of
  the package: search APIs (`Client`) and image fetches (`fetch.Fetcher`).
  """
  if retry_after is not None and retry_after > max_s:
    return None
  step = min(first_s * 2**attempt, max_s)
  return max(step / 2 + rng.uniform(0, step / 2), retry_after or 0.0)


def parse_retry_after(value: str | None) -> float | None:
  """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
  if not value or not value.strip():
    return None
  value = value.strip()
  if value.isascii() and value.isdigit():  # str.isdigit() also accepts '²' and '٣'
    return float(value)
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  if when.tzinfo is None:
    return None
  return max(0.0, when.timestamp() - time.time())


def dig(value: Any, *keys: str) -> Any:
  """`value[k1][k2]...`, or None where a level is missing or not a JSON object."""
  for key in keys:
    if not isinstance(value, dict):
      return None
    value = value.get(key)
  return value


def is_http_url(value: Any) -> bool:
  return isinstance(value, str) and value.startswith(('http://', 'https://'))


def skipped(engine: str, count: int, why: str) -> None:
  if count:
    log.warning('%s: skipped %d result(s) %s.', engine, count, why)


def finish(engine: str, query: str, urls: list[tuple[str, str]], n: int) -> list[Result]:
  """Drops repeated URLs (pages shift while we page through them), trims to n, ranks."""
  seen, results = set(), []
  for url, title in urls:
    if url not in seen:
      seen.add(url)
      results.append(Result(url, title, engine, len(results)))
  if len(results) > n:
    log.info('%s: %d results for %r, trimmed to %d.', engine, len(results), query, n)
  elif not results:
    log.info('%s: no results for %r.', engine, query)
  return results[:n]


def _snippet(body: bytes) -> str:
  return body[:200].decode('utf-8', 'replace')
