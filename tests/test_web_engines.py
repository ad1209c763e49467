"""Each search backend against a loopback server that speaks its API's exact format."""
import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from ie_jax.web import api, engines
from ie_jax.web.clip_retrieval import ClipRetrieval
from ie_jax.web.flickr import Flickr
from ie_jax.web.google_cse import GoogleCustomSearch
from ie_jax.web.openverse import Openverse
from ie_jax.web.wikimedia import WikimediaCommons

FAST = api.HttpOptions(timeout_s=5, retries=2, backoff_s=0.01, max_backoff_s=2,
                       user_agent='ie-jax-tests/1 (test@example.org)')
SIZES = {'few': 30, 'none': 0}  # hits per query; any other query has 1,000


def hit(query: str, i: int) -> str:
  return f'https://img.example.org/{query}/{i}.jpg'


def hits(query: str, start: int, count: int) -> list[int]:
  return list(range(start, min(start + count, SIZES.get(query, 1000))))


class FakeApis:
  """One app with a route per API. `faults` maps a path to a list of canned answers served
  (and consumed) before the real one; `requests` records what each call sent."""

  def __init__(self):
    self.requests = []
    self.faults = {}

  def app(self):
    app = web.Application()
    app.router.add_get('/v1/images/', self.openverse)
    app.router.add_get('/services/rest/', self.flickr)
    app.router.add_get('/w/api.php', self.wikimedia)
    app.router.add_post('/knn-service', self.clip)
    app.router.add_get('/customsearch/v1', self.google)
    return app

  async def record(self, request):
    body = await request.json() if request.method == 'POST' else None
    self.requests.append({'path': request.path, 'params': dict(request.query),
                          'headers': dict(request.headers), 'json': body})
    canned = self.faults.get(request.path)
    return canned.pop(0) if canned else None

  async def openverse(self, request):
    if (fault := await self.record(request)) is not None:
      return fault
    q, page, size = request.query['q'], int(request.query['page']), int(request.query['page_size'])
    if size > 20 and request.headers.get('Authorization') != 'Bearer tok-123':
      return web.json_response({'detail': 'Authentication credentials were not provided.'},
                               status=401)
    ids = hits(q, (page - 1) * size, size)
    total = SIZES.get(q, 1000)
    return web.json_response({
        'result_count': total, 'page_count': -(-total // size), 'page_size': size, 'page': page,
        'results': [{'id': str(i), 'title': f'{q} {i}', 'url': hit(q, i), 'width': 640,
                     'height': 480, 'license': 'by', 'source': 'flickr'} for i in ids],
        'warnings': []})

  async def flickr(self, request):
    if (fault := await self.record(request)) is not None:
      return fault
    p = request.query
    if p['api_key'] != 'flickr-key':
      return web.json_response({'stat': 'fail', 'code': 100,
                                'message': f'Invalid API Key ({p["api_key"]})'})
    page, per_page = int(p['page']), int(p['per_page'])
    ids = hits(p['text'], (page - 1) * per_page, per_page)
    total = SIZES.get(p['text'], 1000)
    photos = []
    for i in ids:
      photo = {'id': str(5000 + i), 'owner': '1@N0', 'secret': f'ab{i}', 'server': '65535',
               'farm': 66, 'title': f'photo {i}', 'ispublic': 1}
      if i % 2 == 0:  # some photos lack the extra; their URL must be built
        photo.update(url_z=hit(p['text'], i), height_z=480, width_z=640)
      photos.append(photo)
    return web.json_response({'photos': {'page': page, 'pages': -(-total // per_page),
                                         'perpage': per_page, 'total': total, 'photo': photos},
                              'stat': 'ok'})

  async def wikimedia(self, request):
    if (fault := await self.record(request)) is not None:
      return fault
    p = request.query
    query = p['gsrsearch'].removesuffix(' filetype:bitmap')
    offset, limit = int(p['gsroffset']), int(p['gsrlimit'])
    ids = hits(query, offset, limit)
    if not ids:
      return web.json_response({'batchcomplete': True})
    pages = [{'pageid': 900 + i, 'ns': 6, 'title': f'File:{query} {i}.jpg', 'index': i + 1,
              'imageinfo': [{'url': hit(query, i) + '.orig', 'thumburl': hit(query, i),
                             'width': 4000, 'height': 3000, 'mime': 'image/jpeg'}]}
             for i in ids]
    body = {'batchcomplete': True, 'query': {'pages': pages[::-1]}}  # not in rank order
    if offset + limit < SIZES.get(query, 1000):
      body['continue'] = {'gsroffset': offset + limit, 'continue': 'gsroffset||'}
    return web.json_response(body)

  async def clip(self, request):
    if (fault := await self.record(request)) is not None:
      return fault
    payload = await request.json()
    # The real service returns up to num_images; this one returns more, to be trimmed.
    ids = hits(payload['text'], 0, payload['num_images'] + 5)
    return web.json_response([{'id': i, 'similarity': 0.5 - i / 1e4, 'url': hit(payload['text'], i),
                               'caption': f'caption {i}'} for i in ids])

  async def google(self, request):
    if (fault := await self.record(request)) is not None:
      return fault
    p = request.query
    start, num = int(p['start']), int(p['num'])
    assert 0 < num <= 10 and start + num <= 101, (start, num)
    ids = hits(p['q'], start - 1, num)
    body = {'kind': 'customsearch#search', 'queries': {'request': [{'startIndex': start}]}}
    if ids:
      body['items'] = [{'kind': 'customsearch#result', 'title': f't{i}', 'link': hit(p['q'], i),
                        'mime': 'image/jpeg', 'image': {'height': 480, 'width': 640}} for i in ids]
    if start + num <= 100 and ids and ids[-1] + 1 < SIZES.get(p['q'], 1000):
      body['queries']['nextPage'] = [{'startIndex': start + num}]
    return web.json_response(body)


@contextlib.asynccontextmanager
async def serve(app):
  runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
  await runner.setup()
  site = web.TCPSite(runner, '127.0.0.1', 0)
  await site.start()
  try:
    yield f'http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}'
  finally:
    await runner.cleanup()


def search(make_engine, query, n, apis=None):
  """Runs one search against a fresh fake; returns (results, the fake's request log)."""
  apis = apis or FakeApis()

  async def go():
    async with serve(apis.app()) as base:
      return await make_engine(base).search(query, n)
  return asyncio.run(go()), apis.requests


def check_results(results, query, ids, source):
  assert [r.rank for r in results] == list(range(len(results)))
  assert {r.source for r in results} == {source}
  assert len({r.url for r in results}) == len(results)
  if ids is not None:
    assert [r.url.split('/')[-1].split('.')[0] for r in results] == [str(i) for i in ids]


@pytest.fixture(autouse=True)
def no_keys(monkeypatch):
  for var in ('OPENVERSE_TOKEN', 'FLICKR_API_KEY', 'GOOGLE_CSE_KEY', 'GOOGLE_CSE_CX'):
    monkeypatch.delenv(var, raising=False)


def test_openverse_anonymous_pages_of_20_trimmed_to_n():
  results, sent = search(lambda b: Openverse(b, FAST), 'corgi', 45)
  check_results(results, 'corgi', range(45), 'openverse')
  assert [r['params'] for r in sent] == [
      {'q': 'corgi', 'page': str(p), 'page_size': '20'} for p in (1, 2, 3)]
  assert 'Authorization' not in sent[0]['headers']


def test_openverse_token_allows_large_pages(monkeypatch):
  monkeypatch.setenv('OPENVERSE_TOKEN', 'tok-123')
  results, sent = search(lambda b: Openverse(b, FAST), 'corgi', 300)
  assert len(results) == 300 and len(sent) == 1
  assert sent[0]['params']['page_size'] == '300'
  assert sent[0]['headers']['Authorization'] == 'Bearer tok-123'


def test_openverse_stops_when_the_api_runs_out():
  results, sent = search(lambda b: Openverse(b, FAST), 'few', 100)
  assert len(results) == 30 and len(sent) == 2  # page_count is 2
  results, sent = search(lambda b: Openverse(b, FAST), 'none', 100)
  assert results == [] and len(sent) == 1


def test_flickr_parameters_urls_and_paging(monkeypatch):
  with pytest.raises(api.MissingKeyError, match='FLICKR_API_KEY'):
    Flickr('http://127.0.0.1:1', FAST)
  monkeypatch.setenv('FLICKR_API_KEY', 'flickr-key')
  results, sent = search(lambda b: Flickr(b, FAST), 'corgi', 700)
  check_results(results, 'corgi', None, 'flickr')
  assert len(results) == 700 and [r['params']['page'] for r in sent] == ['1', '2']
  assert sent[0]['params'] == {
      'method': 'flickr.photos.search', 'api_key': 'flickr-key', 'text': 'corgi',
      'sort': 'relevance', 'content_type': '1', 'media': 'photos', 'safe_search': '1',
      'per_page': '500', 'page': '1', 'extras': 'url_z,url_n', 'format': 'json',
      'nojsoncallback': '1'}
  assert results[0].url == hit('corgi', 0)  # from url_z
  assert results[1].url == 'https://live.staticflickr.com/65535/5001_ab1_z.jpg'  # built


def test_flickr_api_error_is_raised_without_the_key(monkeypatch):
  monkeypatch.setenv('FLICKR_API_KEY', 'wrong-key')
  with pytest.raises(api.EngineError) as e:
    search(lambda b: Flickr(b, FAST), 'corgi', 10)
  assert 'API error 100' in str(e.value) and 'wrong-key' not in str(e.value)
  assert '<redacted>' in str(e.value)


def test_wikimedia_parameters_continue_and_rank_order():
  results, sent = search(lambda b: WikimediaCommons(b, FAST), 'corgi', 120)
  check_results(results, 'corgi', range(120), 'wikimedia')
  assert results[0].url == hit('corgi', 0) and results[0].title == 'corgi 0.jpg'  # thumb
  assert [(r['params']['gsroffset'], r['params']['gsrlimit']) for r in sent] == [
      ('0', '50'), ('50', '50'), ('100', '20')]
  assert sent[0]['params'] == {
      'action': 'query', 'format': 'json', 'formatversion': '2', 'generator': 'search',
      'gsrsearch': 'corgi filetype:bitmap', 'gsrnamespace': '6', 'gsrlimit': '50',
      'gsroffset': '0', 'prop': 'imageinfo', 'iiprop': 'url|size|mime', 'iiurlwidth': '512',
      'maxlag': '5'}
  assert sent[0]['headers']['User-Agent'] == FAST.user_agent
  results, sent = search(lambda b: WikimediaCommons(b, FAST), 'none', 10)
  assert results == []


def test_wikimedia_retries_maxlag_then_fails_on_other_api_errors():
  apis = FakeApis()
  apis.faults['/w/api.php'] = [web.json_response(
      {'error': {'code': 'maxlag', 'info': 'Waiting for a database server: 6 seconds lagged.'}})]
  results, sent = search(lambda b: WikimediaCommons(b, FAST), 'few', 100, apis)
  assert len(results) == 30 and len(sent) == 2
  apis.faults['/w/api.php'] = [web.json_response({'error': {'code': 'badvalue', 'info': 'x'}})]
  with pytest.raises(api.EngineError, match='badvalue'):
    search(lambda b: WikimediaCommons(b, FAST), 'few', 100, apis)


def test_clip_retrieval_request_and_trimming():
  results, sent = search(lambda b: ClipRetrieval(b, 'my-index', FAST), 'a corgi', 40)
  check_results(results, 'a corgi', range(40), 'clip_retrieval')
  assert results[0].title == 'caption 0'
  assert sent[0]['json'] == {
      'text': 'a corgi', 'modality': 'image', 'num_images': 40, 'num_result_ids': 120,
      'indice_name': 'my-index', 'deduplicate': True, 'use_safety_model': True,
      'use_violence_detector': True, 'use_mclip': False}


def test_clip_retrieval_skips_bad_items_and_rejects_non_lists(caplog):
  apis = FakeApis()
  apis.faults['/knn-service'] = [
      web.json_response([{'url': hit('q', 0)}, {'caption': 'no url'}, 'junk',
                         {'url': 'javascript:alert(1)'}, {'url': hit('q', 0)}]),
      web.json_response({'results': []})]
  results, _ = search(lambda b: ClipRetrieval(b, http=FAST), 'q', 10, apis)
  assert [r.url for r in results] == [hit('q', 0)]  # the repeat is dropped too
  assert 'skipped 3 result(s)' in caplog.text
  with pytest.raises(api.EngineError, match='not a JSON list'):
    search(lambda b: ClipRetrieval(b, http=FAST), 'q', 10, apis)


def test_google_keys_paging_and_the_100_cap(monkeypatch):
  with pytest.raises(api.MissingKeyError, match='GOOGLE_CSE_KEY'):
    GoogleCustomSearch('http://127.0.0.1:1', FAST)
  monkeypatch.setenv('GOOGLE_CSE_KEY', 'g-key')
  with pytest.raises(api.MissingKeyError, match='GOOGLE_CSE_CX'):
    GoogleCustomSearch('http://127.0.0.1:1', FAST)
  monkeypatch.setenv('GOOGLE_CSE_CX', 'cx-1')
  results, sent = search(lambda b: GoogleCustomSearch(b, FAST), 'corgi', 25)
  check_results(results, 'corgi', range(25), 'google')
  assert [(r['params']['start'], r['params']['num']) for r in sent] == [
      ('1', '10'), ('11', '10'), ('21', '5')]
  assert sent[0]['params'] == {'key': 'g-key', 'cx': 'cx-1', 'q': 'corgi',
                               'searchType': 'image', 'num': '10', 'start': '1',
                               'safe': 'active'}
  results, sent = search(lambda b: GoogleCustomSearch(b, FAST), 'corgi', 500)
  assert len(results) == 100 and sent[-1]['params']['start'] == '91'
  results, sent = search(lambda b: GoogleCustomSearch(b, FAST), 'none', 10)
  assert results == [] and len(sent) == 1


def test_malformed_json_and_http_errors_raise_engine_errors_without_secrets(monkeypatch):
  monkeypatch.setenv('GOOGLE_CSE_KEY', 'g-key/secret')
  monkeypatch.setenv('GOOGLE_CSE_CX', 'cx-1')
  apis = FakeApis()
  apis.faults['/customsearch/v1'] = [
      web.Response(text='{"items": [', content_type='application/json')]
  with pytest.raises(api.EngineError, match='malformed JSON'):
    search(lambda b: GoogleCustomSearch(b, FAST), 'q', 10, apis)
  # A server that echoes the request URL (key and all) in its error page.
  apis.faults['/customsearch/v1'] = [
      web.Response(status=403, text='forbidden: key=g-key%2Fsecret cx=cx-1')]
  with pytest.raises(api.EngineError) as e:
    search(lambda b: GoogleCustomSearch(b, FAST), 'q', 10, apis)
  assert 'HTTP 403' in str(e.value)
  assert 'g-key' not in str(e.value) and 'secret' not in str(e.value) and 'cx-1' not in str(e.value)
  apis.faults['/customsearch/v1'] = [web.Response(status=500) for _ in range(3)]
  with pytest.raises(api.EngineError, match='giving up after 3 attempts'):
    search(lambda b: GoogleCustomSearch(b, FAST), 'q', 10, apis)
  apis.faults['/customsearch/v1'] = [web.json_response({'items': {'not': 'a list'}})]
  with pytest.raises(api.EngineError, match='not a list'):
    search(lambda b: GoogleCustomSearch(b, FAST), 'q', 10, apis)


def test_429_with_retry_after_is_waited_out():
  apis = FakeApis()
  apis.faults['/v1/images/'] = [web.Response(status=429, headers={'Retry-After': '1'}),
                                web.Response(status=503)]
  loop_time = []

  async def go():
    async with serve(apis.app()) as base:
      start = asyncio.get_running_loop().time()
      results = await Openverse(base, FAST).search('corgi', 5)
      loop_time.append(asyncio.get_running_loop().time() - start)
      return results
  assert len(asyncio.run(go())) == 5
  assert len(apis.requests) == 3 and loop_time[0] >= 1.0
  # A Retry-After longer than we are willing to wait ends the search at once.
  apis.faults['/v1/images/'] = [web.Response(status=429, headers={'Retry-After': '3600'})]
  with pytest.raises(api.EngineError, match='HTTP 429'):
    search(lambda b: Openverse(b, FAST), 'corgi', 5, apis)


def test_query_cache_answers_repeats_and_survives_json():
  apis = FakeApis()
  cache = engines.QueryCache()

  async def go(cache, queries):
    async with serve(apis.app()) as base:
      engine = engines.CachedEngine(Openverse(base, FAST), cache)
      return [await engine.search(q, n) for q, n in queries]

  first = asyncio.run(go(cache, [('corgi', 20), ('few', 100)]))
  assert len(apis.requests) == 1 + 2
  cache = engines.QueryCache.from_state(json.loads(json.dumps(cache.state())))
  again = asyncio.run(go(cache, [('corgi', 10), ('few', 500), ('corgi', 40)]))
  assert again[0] == first[0][:10] and again[1] == first[1]  # 'few' had only 30
  assert len(apis.requests) == 3 + 2  # only corgi@40 went out (two pages)
  assert len(again[2]) == 40


def test_unknown_engine_lists_the_valid_ones():
  with pytest.raises(KeyError, match="valid engines: .*'flickr'.*'openverse'"):
    engines.make('bing')
  assert isinstance(engines.make('wikimedia', http=FAST), WikimediaCommons)
