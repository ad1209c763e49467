"""Openverse `/v1/images/`: openly licensed images, keyless at 20 per page.

Anonymous callers get at most 20 per page (a larger `page_size` is a 401) and every caller at
most 20 pages. A bearer token (from OAuth2 client credentials) in `OPENVERSE_TOKEN` raises
the page size to 500; obtaining and refreshing it is left to the user.
"""
import os

from ie_jax.web import api

TOKEN_ENV = 'OPENVERSE_TOKEN'
ANONYMOUS_PAGE_SIZE = 20
AUTHED_PAGE_SIZE = 500
MAX_PAGES = 20
MAX_QUERY_CHARS = 200


class Openverse:
  """Args: base_url (tests point it at loopback), http options, and extra filters
  (e.g. {'license_type': 'commercial'}) passed through as query parameters."""
  name = 'openverse'

  def __init__(self, base_url: str = 'https://api.openverse.org',
               http: api.HttpOptions = api.HttpOptions(min_interval_s=0.6),
               filters: dict | None = None):
    self._url = base_url.rstrip('/') + '/v1/images/'
    self._token = os.environ.get(TOKEN_ENV, '').strip()  # optional
    self._filters = dict(filters or {})
    self._client = api.JsonClient(self.name, http, secrets=(self._token,))

  async def search(self, query: str, n: int) -> list[api.Result]:
    page_size = min(n, AUTHED_PAGE_SIZE if self._token else ANONYMOUS_PAGE_SIZE)
    headers = {'Authorization': f'Bearer {self._token}'} if self._token else {}
    found, bad = [], 0
    async with self._client.session(headers) as session:
      for page in range(1, MAX_PAGES + 1):
        params = {'q': query[:MAX_QUERY_CHARS], 'page': page, 'page_size': page_size,
                  **self._filters}
        body = await self._client.request(session, 'GET', self._url, params=params)
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
