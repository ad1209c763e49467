"""Openverse `/v1/images/`: openly licensed images, keyless at 20 per page.

Anonymous callers get at most 20 per page (a larger `page_size` is a 401), a small daily
allowance, and every caller at most 20 pages. A registered application gets pages of up to
500 and about 10,000 requests a day. Register once (`python -m ie_jax.web.openverse
register --name NAME --description TEXT --email ADDRESS`, then follow the link Openverse
mails) and set `OPENVERSE_CLIENT_ID` and `OPENVERSE_CLIENT_SECRET`: the engine then gets
its bearer token itself (OAuth2 client credentials) and renews it before it expires. A
token obtained elsewhere can be given in `OPENVERSE_TOKEN` instead. None of them is ever
logged or checkpointed.
"""
import argparse
import asyncio
import json
import logging
import os
import sys
import time

from ie_jax.web import api

log = logging.getLogger(__name__)
TOKEN_ENV = 'OPENVERSE_TOKEN'
CLIENT_ID_ENV, CLIENT_SECRET_ENV = 'OPENVERSE_CLIENT_ID', 'OPENVERSE_CLIENT_SECRET'
ANONYMOUS_PAGE_SIZE = 20
AUTHED_PAGE_SIZE = 500
MAX_PAGES = 20
MAX_QUERY_CHARS = 200
# A token is renewed this long before the expiry the API gave (its `expires_in`), so no
# request of a long search goes out with one that lapses on the way.
RENEW_BEFORE_S = 300.0
BASE_URL = 'https://api.openverse.org'


def has_credentials() -> bool:
  """Whether the environment gives a token or a registered application's credentials."""
  return bool(os.environ.get(TOKEN_ENV, '').strip() or (
      os.environ.get(CLIENT_ID_ENV, '').strip() and
      os.environ.get(CLIENT_SECRET_ENV, '').strip()))


def warn_if_anonymous(queries_per_iteration: int, images_per_query: int) -> None:
  """At a run's start: without credentials, the arithmetic of why its quota will end it."""
  if has_credentials():
    return
  pages = -(-images_per_query // ANONYMOUS_PAGE_SIZE)
  log.warning(
      'Openverse without credentials: one iteration asks about %d requests (%d queries '
      'x %d pages of %d), and anonymous callers get a small daily allowance, so the '
      'run will stop on its quota. Register once (python -m ie_jax.web.openverse '
      'register ...; the engine table in the README) and set %s and %s.',
      queries_per_iteration * pages, queries_per_iteration, pages, ANONYMOUS_PAGE_SIZE,
      CLIENT_ID_ENV, CLIENT_SECRET_ENV)


class Openverse:
  """Args: base_url (tests point it at loopback), http options, and extra filters
  (e.g. {'license_type': 'commercial'}) passed through as query parameters."""
  name = 'openverse'

  def __init__(self, base_url: str = BASE_URL,
               http: api.HttpOptions = api.HttpOptions(min_interval_s=0.6),
               filters: dict | None = None):
    base_url = base_url.rstrip('/')
    self._url = base_url + '/v1/images/'
    self._token_url = base_url + '/v1/auth_tokens/token/'
    self._token = os.environ.get(TOKEN_ENV, '').strip()
    self._client_id = os.environ.get(CLIENT_ID_ENV, '').strip()
    self._client_secret = os.environ.get(CLIENT_SECRET_ENV, '').strip()
    if bool(self._client_id) != bool(self._client_secret):
      raise api.MissingKeyError(
          f'The openverse engine needs both {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} (or '
          f'neither, for anonymous access); only one is set.')
    self._renew = self._client_id and not self._token  # a given token is used as it is
    self._expires = 0.0  # monotonic time the obtained token lapses
    self._filters = dict(filters or {})
    self._client = api.JsonClient(self.name, http, secrets=(
        self._token, self._client_id, self._client_secret))
    self._lock, self._lock_loop = None, None

  async def search(self, query: str, n: int) -> list[api.Result]:
    authed = bool(self._token or self._renew)
    page_size = min(n, AUTHED_PAGE_SIZE if authed else ANONYMOUS_PAGE_SIZE)
    found, bad = [], 0
    async with self._client.session() as session:
      for page in range(1, MAX_PAGES + 1):
        params = {'q': query[:MAX_QUERY_CHARS], 'page': page, 'page_size': page_size,
                  **self._filters}
        body = await self._get(session, params)
        if not isinstance(body, dict) or not isinstance(body.get('results'), list):
          raise self._client.error(f'no "results" list in the response to page {page}')
        for item in body['results']:
          if isinstance(item, dict) and api.is_http_url(item.get('url')):
            found.append((item['url'], str(item.get('title') or '')))
          else:
            bad += 1
        page_count = body.get('page_count')
        if (not body['results'] or len(found) >= n or
            (isinstance(page_count, int) and page >= page_count)):
          break
    api.skipped(self.name, bad, 'without a usable "url"')
    return api.finish(self.name, query, found, n)

  async def _get(self, session, params: dict):
    try:
      return await self._client.request(session, 'GET', self._url, params=params,
                                        headers=await self._auth(session))
    except api.EngineError as e:
      if not (self._renew and e.status == 401):
        raise
      # Revoked or lapsed early: one fresh token, one more try.
      self._expires = 0.0
      return await self._client.request(session, 'GET', self._url, params=params,
                                        headers=await self._auth(session))

  async def _auth(self, session) -> dict:
    if self._renew and time.monotonic() >= self._expires - RENEW_BEFORE_S:
      async with self._token_lock():
        if time.monotonic() >= self._expires - RENEW_BEFORE_S:  # not renewed meanwhile
          await self._obtain_token(session)
    return {'Authorization': f'Bearer {self._token}'} if self._token else {}

  def _token_lock(self) -> asyncio.Lock:
    # One lock per event loop: each search phase runs its queries in a fresh loop.
    loop = asyncio.get_running_loop()
    if self._lock_loop is not loop:
      self._lock, self._lock_loop = asyncio.Lock(), loop
    return self._lock

  async def _obtain_token(self, session) -> None:
    body = await self._client.request(session, 'POST', self._token_url, form={
        'client_id': self._client_id, 'client_secret': self._client_secret,
        'grant_type': 'client_credentials'})
    token = body.get('access_token') if isinstance(body, dict) else None
    expires_in = body.get('expires_in') if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip() or type(expires_in) is not int or \
        expires_in <= 0:  # pylint: disable=unidiomatic-typecheck
      raise self._client.error('the token endpoint gave no access_token and positive '
                               'expires_in: are OPENVERSE_CLIENT_ID and _SECRET those of a '
                               'verified application?')
    self._token = token.strip()
    self._client.add_secret(self._token)
    self._expires = time.monotonic() + expires_in


async def register(name: str, description: str, email: str, *, base_url: str = BASE_URL,
                   http: api.HttpOptions = api.HttpOptions()) -> dict:
  """Registers an application; returns the API's answer (client_id and client_secret)."""
  client = api.JsonClient('openverse', http)
  async with client.session() as session:
    body = await client.request(session, 'POST', base_url.rstrip('/') +
                                '/v1/auth_tokens/register/',
                                json_body={'name': name, 'description': description,
                                           'email': email})
  if not (isinstance(body, dict) and isinstance(body.get('client_id'), str) and
          isinstance(body.get('client_secret'), str)):
    raise client.error('the registration answer has no client_id and client_secret')
  return body


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m ie_jax.web.openverse',
      description='Registers an Openverse API application (once per user).')
  sub = parser.add_subparsers(dest='command', required=True)
  reg = sub.add_parser('register', help='register an application; prints its credentials')
  reg.add_argument('--name', required=True, help='a unique application name')
  reg.add_argument('--description', required=True, help='what you use the API for')
  reg.add_argument('--email', required=True, help='Openverse mails a verification link here')
  reg.add_argument('--base_url', default=BASE_URL)
  args = parser.parse_args(argv)
  try:
    body = asyncio.run(register(args.name, args.description, args.email,
                                base_url=args.base_url))
  except api.EngineError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(json.dumps({k: body[k] for k in ('client_id', 'client_secret')}))
  print(f'Open the link Openverse mailed to {args.email}, then set {CLIENT_ID_ENV} and '
        f'{CLIENT_SECRET_ENV} to these values (keep the secret out of configs and logs).',
        file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
