"""Google Custom Search JSON API with `searchType=image`: needs a key and a search engine id.

At most 10 per request and 100 per query (`start` + `num` <= 101). The API is closed to new
customers and ends on 2027-01-01; it is here for those who still have access.
"""
from ie_jax.web import api

KEY_ENV = 'GOOGLE_CSE_KEY'
CX_ENV = 'GOOGLE_CSE_CX'
MAX_NUM = 10
MAX_RESULTS = 100


class GoogleCustomSearch:
  """Args: base_url (tests point it at loopback), http options, and extra parameters
  (e.g. {'imgSize': 'large'}) passed through."""
  name = 'google'

  def __init__(self, base_url: str = 'https://www.googleapis.com',
               http: api.HttpOptions = api.HttpOptions(), extra_params: dict | None = None):
    self._url = base_url.rstrip('/') + '/customsearch/v1'
    self._key = api.env_key(KEY_ENV, self.name)
    self._cx = api.env_key(CX_ENV, self.name)
    self._extra = dict(extra_params or {})
    self._client = api.JsonClient(self.name, http, secrets=(self._key, self._cx))

  async def search(self, query: str, n: int) -> list[api.Result]:
    n = min(n, MAX_RESULTS)
    found, bad, start = [], 0, 1
    async with self._client.session() as session:
      while len(found) < n and start <= MAX_RESULTS - MAX_NUM + 1:
        params = {'key': self._key, 'cx': self._cx, 'q': query, 'searchType': 'image',
                  'num': min(MAX_NUM, n - len(found)), 'start': start, 'safe': 'active',
                  **self._extra}
        body = await self._client.request(session, 'GET', self._url, params=params)
        if not isinstance(body, dict):
          raise self._client.error('the response is not a JSON object')
        items = body.get('items', [])  # absent when there are no (more) results
        if not isinstance(items, list):
          raise self._client.error('"items" is not a list')
        for item in items:
          if isinstance(item, dict) and api.is_http_url(item.get('link')):
            found.append((item['link'], str(item.get('title') or '')))
          else:
            bad += 1
        if not items or api.dig(body, 'queries', 'nextPage') is None:
          break
        start += len(items)
    api.skipped(self.name, bad, 'without a usable "link"')
    return api.finish(self.name, query, found, n)
