"""Wikimedia Commons through the MediaWiki Action API: keyless, with a contactable User-Agent.

A search generator over the File: namespace (6) with `prop=imageinfo`, paged through
`continue`/`gsroffset`. `iiurlwidth` asks the servers for a scaled thumbnail, so we do not
fetch multi-megapixel originals only to shrink them to `short_side`. Requests go in series,
with `maxlag`, as the API etiquette asks.
"""
from ie_jax.web import api

MAX_LIMIT = 50  # thumbnails the servers scale in one request stay modest
# CirrusSearch serves no results past offset 10,000: an answer that keeps offering more
# (pages of items without URLs, offsets that creep forward) is cut off there.
MAX_OFFSET = 10_000
_RETRY_CODES = frozenset({'maxlag', 'ratelimited'})


class WikimediaCommons:
  """Args: base_url (tests point it at loopback), http options (set a `user_agent` with a
  way to contact you), and the thumbnail width to ask for."""
  name = 'wikimedia'

  def __init__(self, base_url: str = 'https://commons.wikimedia.org',
               http: api.HttpOptions = api.HttpOptions(min_interval_s=0.2),
               thumb_width: int = 512):
    self._url = base_url.rstrip('/') + '/w/api.php'
    self._thumb_width = thumb_width
    self._client = api.JsonClient(self.name, http)

  async def search(self, query: str, n: int) -> list[api.Result]:
    found, bad, offset, requests = [], 0, 0, 0
    async with self._client.session() as session:
      while len(found) < n:
        requests += 1
        params = {'action': 'query', 'format': 'json', 'formatversion': 2,
                  'generator': 'search', 'gsrsearch': f'{query} filetype:bitmap',
                  'gsrnamespace': 6, 'gsrlimit': min(n - len(found), MAX_LIMIT),
                  'gsroffset': offset, 'prop': 'imageinfo', 'iiprop': 'url|size|mime',
                  'iiurlwidth': self._thumb_width, 'maxlag': 5}
        body = await self._lagged(session, params)
        if not isinstance(body, dict):
          raise self._client.error('the response is not a JSON object')
        pages = api.dig(body, 'query', 'pages')
        pages = [] if pages is None and 'query' not in body else pages  # no hits: no "query"
        if not isinstance(pages, list):
          raise self._client.error('no "query.pages" list in the response')
        # Pages come back in page-id order; `index` is the search rank.
        pages = sorted((p for p in pages if isinstance(p, dict)),
                       key=lambda p: p.get('index') if isinstance(p.get('index'), int) else 1e9)
        for page in pages:
          info = page.get('imageinfo')
          info = info[0] if isinstance(info, list) and info and isinstance(info[0], dict) else {}
          url = next((u for u in (info.get('thumburl'), info.get('url')) if api.is_http_url(u)),
                     None)
          if url is None:
            bad += 1
          else:
            found.append((url, str(page.get('title') or '').removeprefix('File:')))
        next_offset = api.dig(body, 'continue', 'gsroffset')
        if (not pages or not isinstance(next_offset, int) or next_offset <= offset
            or next_offset >= MAX_OFFSET or requests >= MAX_OFFSET // MAX_LIMIT):
          break
        offset = next_offset
    api.skipped(self.name, bad, 'without an image URL')
    return api.finish(self.name, query, found, n)

  async def _lagged(self, session, params: dict) -> dict:
    # MediaWiki reports lag and rate limits as a JSON error with HTTP 200.
    for attempt in range(self._client.options.retries + 1):
      body = await self._client.request(session, 'GET', self._url, params=params)
      error = body.get('error') if isinstance(body, dict) else None
      if not isinstance(error, dict):
        return body
      code = error.get('code')
      if (not isinstance(code, str) or code not in _RETRY_CODES
          or attempt == self._client.options.retries):
        raise self._client.error(
            f'API error {str(code)[:100]}: {str(error.get("info"))[:200]}')
      await self._client.sleep_backoff(attempt)
    raise AssertionError('unreachable')
