"""Flickr `flickr.photos.search` (REST, JSON): needs a key in `FLICKR_API_KEY`.

At most 500 per page and 4,000 per query. The image URL comes from the `url_z` (640 px) or
`url_n` (320 px) extra when present, else it is built from server/id/secret as
https://live.staticflickr.com/{server}/{id}_{secret}_z.jpg (flickr.com/services/api/misc.urls.html).
"""
from ie_jax.web import api

KEY_ENV = 'FLICKR_API_KEY'
MAX_PER_PAGE = 500
MAX_RESULTS = 4000


class Flickr:
  """Args: base_url (tests point it at loopback), http options, and extra parameters
  (e.g. {'license': '1,2,4,5,7,9,10'}) passed through."""
  name = 'flickr'

  def __init__(self, base_url: str = 'https://api.flickr.com',
               http: api.HttpOptions = api.HttpOptions(min_interval_s=1.0),
               extra_params: dict | None = None):
    self._url = base_url.rstrip('/') + '/services/rest/'
    self._key = api.env_key(KEY_ENV, self.name)
    self._extra = dict(extra_params or {})
    self._client = api.JsonClient(self.name, http, secrets=(self._key,))

  async def search(self, query: str, n: int) -> list[api.Result]:
    if n <= 0:
      return []
    per_page = min(n, MAX_PER_PAGE)
    found, bad = [], 0
    async with self._client.session() as session:
      for page in range(1, MAX_RESULTS // per_page + 1):
        params = {'method': 'flickr.photos.search', 'api_key': self._key, 'text': query,
                  'sort': 'relevance', 'content_type': 1, 'media': 'photos', 'safe_search': 1,
                  'per_page': per_page, 'page': page, 'extras': 'url_z,url_n',
                  'format': 'json', 'nojsoncallback': 1, **self._extra}
        body = await self._client.request(session, 'GET', self._url, params=params)
        if not isinstance(body, dict):
          raise self._client.error('the response is not a JSON object')
        if body.get('stat') != 'ok':  # Flickr reports API errors with HTTP 200
          raise self._client.error(
              f'API error {body.get("code")}: {str(body.get("message"))[:200]}')
        photos = body.get('photos')
        if not isinstance(photos, dict) or not isinstance(photos.get('photo'), list):
          raise self._client.error(f'no "photos.photo" list in the response to page {page}')
        for photo in photos['photo']:
          url = _photo_url(photo) if isinstance(photo, dict) else None
          if url is None:
            bad += 1
          else:
            found.append((url, str(photo.get('title') or '')))
        pages = photos.get('pages')
        if (not photos['photo'] or len(found) >= n or
            (isinstance(pages, int) and page >= pages)):
          break
    api.skipped(self.name, bad, 'without a URL or the fields to build one')
    return api.finish(self.name, query, found, n)


def _photo_url(photo: dict) -> str | None:
  for extra in ('url_z', 'url_n'):
    if api.is_http_url(photo.get(extra)):
      return photo[extra]
  parts = [photo.get(k) for k in ('server', 'id', 'secret')]
  # Only plain tokens go into the URL we build: a hostile value cannot add path segments.
  if all(isinstance(p, (str, int)) and str(p).isalnum() for p in parts):
    server, photo_id, secret = (str(p) for p in parts)
    return f'https://live.staticflickr.com/{server}/{photo_id}_{secret}_z.jpg'
  return None
