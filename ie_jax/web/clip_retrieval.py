"""clip-retrieval's `/knn-service` (the LAION-style engine): POST a text, get a list back.

The hosted knn.laion.ai has been down since 2024, so `base_url` normally points at a
self-hosted `clip-retrieval back`. The service runs its dedup and safety filters after the
kNN, so we ask for `oversample` x n ids to still get n images back; it has no pages.
"""
from ie_jax.web import api


class ClipRetrieval:
  """Args: base_url of the backend, the index name, http options, and the oversampling."""
  name = 'clip_retrieval'

  def __init__(self, base_url: str = 'https://knn.laion.ai', indice_name: str = 'laion5B-L-14',
               http: api.HttpOptions = api.HttpOptions(min_interval_s=0.05),
               oversample: int = 3, safety: bool = True):
    self._url = base_url.rstrip('/') + '/knn-service'
    self._indice_name = indice_name
    self._oversample = oversample
    self._safety = safety
    self._client = api.JsonClient(self.name, http)

  async def search(self, query: str, n: int) -> list[api.Result]:
    payload = {'text': query, 'modality': 'image', 'num_images': n,
               'num_result_ids': n * self._oversample, 'indice_name': self._indice_name,
               'deduplicate': True, 'use_safety_model': self._safety,
               'use_violence_detector': self._safety, 'use_mclip': False}
    async with self._client.session() as session:
      body = await self._client.request(session, 'POST', self._url, json_body=payload)
    if isinstance(body, dict) and 'error' in body:  # the service's own error shape
      raise self._client.error(f'service error: {str(body["error"])[:200]}')
    if not isinstance(body, list):
      raise self._client.error('the response is not a JSON list')
    found, bad = [], 0
    for item in body:
      if isinstance(item, dict) and api.is_http_url(item.get('url')):
        found.append((item['url'], str(item.get('caption') or '')))
      else:
        bad += 1
    api.skipped(self.name, bad, 'without a usable "url"')
    return api.finish(self.name, query, found, n)
