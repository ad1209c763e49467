"""A search-and-download phase against hostile APIs: no file name or path comes from a URL or
an API string, and API keys never reach the logs, the store's manifests or the saved caches.

The phase is `search.run`, the explorer's own, with the Flickr and Google backends
pointed at a loopback imitation of their APIs. The imitation answers with titles, URLs and
errors chosen to cause trouble: path traversal, slashes, NUL bytes, 3,000-character names,
and error texts that echo the key back (as Flickr's "Invalid API Key (...)" does).
"""
import json
import logging
import os
import re
import urllib.parse
import zlib

import pytest
from aiohttp import web

from configs import common
from ie_jax.explore import search
from ie_jax.testing.fault_server import encode, picture, serve_in_thread
from ie_jax.web import api, engines
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import shards
from ie_jax.web import store as store_lib
from ie_jax.web.flickr import Flickr
from ie_jax.web.google_cse import GoogleCustomSearch

KEY = 'IEJAX-TEST-KEY-7f3a9c0e5b'  # distinctive: any occurrence in a file is a leak
CX = 'IEJAX-TEST-CX-51d2e8'
HTTP = api.HttpOptions(timeout_s=5, retries=1, backoff_s=0.01, max_backoff_s=0.1)
HOSTILE_PATHS = ['../../etc/passwd', 'a%2Fb%00c.jpg', 'x' * 3000 + '.jpg', '%2e%2e%2f%2e%2e%2fx',
                 'dir/../../../up.jpg', 'name.jpg?file=../../x', 'C:%5Cwindows%5Cwin.ini',
                 '.hidden', 'con.jpg']
HOSTILE_TITLES = ['../../etc/passwd', 'a/b\x00c', 'x' * 3000, '/abs/path', 'C:\\windows\\x',
                  '\u202egpj.exe', '']
QUERIES = ['../../evil', 'a/b\x00c', 'ok', 'echo-key', 'echo-500', 'bad-json', 'reset']


class HostileApi:
  """Flickr and Google Custom Search imitations, plus the images their results point at."""

  def app(self):
    app = web.Application()
    app.router.add_get('/services/rest/', self.flickr)
    app.router.add_get('/customsearch/v1', self.google)
    app.router.add_get('/p/{tail:.*}', self.image)
    return app

  async def image(self, request):  # any path: a distinct picture per path
    return web.Response(body=encode(picture(zlib.crc32(request.path_qs.encode()), (80, 64)),
                                    'JPEG'), content_type='image/jpeg')

  async def trouble(self, request, query, key):
    """The answer for a troublesome query, or None for a normal one."""
    if key != KEY:
      return web.json_response({'stat': 'fail', 'code': 100, 'message': f'Invalid API Key ({key})'})
    if query == 'echo-key':
      return web.json_response({'stat': 'fail', 'code': 105,
                                'message': f'Service unavailable for key {key}',
                                'error': {'message': f'key {key} is invalid'}}, status=400)
    if query == 'echo-500':
      return web.Response(status=500, text=f'internal error handling {request.url}')
    if query == 'bad-json':
      return web.Response(text=f'<html>{request.url} key={key}</html>',
                          content_type='application/json')
    if query == 'reset':
      request.transport.abort()
      return web.Response()
    return None

  def results(self, request, query):
    base = f'{request.scheme}://{request.host}'
    i = sum(map(ord, query))
    return [(f'{base}/p/{urllib.parse.quote(query, safe="")}/{i + j}/{path}',
             HOSTILE_TITLES[j % len(HOSTILE_TITLES)])
            for j, path in enumerate(HOSTILE_PATHS)]

  async def flickr(self, request):
    p = request.query
    if (answer := await self.trouble(request, p['text'], p['api_key'])) is not None:
      return answer
    photos = [{'id': str(j), 'secret': 'abc', 'server': '1', 'title': title, 'url_z': url}
              for j, (url, title) in enumerate(self.results(request, p['text']))]
    return web.json_response({'stat': 'ok', 'photos': {'page': 1, 'pages': 1, 'photo': photos}})

  async def google(self, request):
    p = request.query
    key = p['key'] if p['cx'] == CX else 'wrong-cx'
    if (answer := await self.trouble(request, p['q'], key)) is not None:
      return answer
    return web.json_response({'items': [{'link': url, 'title': title}
                                        for url, title in self.results(request, p['q'])]})


OUR_NAMES = re.compile(r'^(web/(images-\d{5}-\d{3}\.array_record|manifest-\d{5}-\d{3}\.jsonl'
                       r'|excluded-\d{5}\.json)'
                       r'|logs/run\.log|explorer/(queries|url_cache|dedup)\.json)$')


def hostile_api():
  """Serves `HostileApi` from a thread (the phase runs event loops of its own); yields its URL."""
  return serve_in_thread(HostileApi().app())


def run_phase(make_engine, workdir: str) -> dict:
  """The explorer's search phase into `workdir`, logging everything to workdir/logs/run.log,
  then the caches saved as the explorer checkpoints them."""
  os.makedirs(os.path.join(workdir, 'logs'))
  handler = logging.FileHandler(os.path.join(workdir, 'logs', 'run.log'), encoding='utf-8')
  handler.setFormatter(logging.Formatter('%(levelname)s %(name)s %(message)s'))
  root = logging.getLogger()
  old_level = root.level
  root.addHandler(handler)
  root.setLevel(logging.DEBUG)
  web_config = common.get_base_config().web
  web_config.allow_networks = '127.0.0.1/32'
  web_config.min_side, web_config.max_side, web_config.part_size = 32, 64, 10
  queries, url_cache, dedup = engines.QueryCache(), dedup_lib.UrlCache(), dedup_lib.DedupIndex()
  try:
    with hostile_api() as base:
      engine = engines.CachedEngine(make_engine(base), queries)
      store = shards.ShardedStore(workdir, 0, 1)
      counts = search.run(
          0, list(enumerate(QUERIES)), engine, store, dedup=dedup, url_cache=url_cache,
          web_config=web_config, images_per_query=len(HOSTILE_PATHS))
  finally:
    root.removeHandler(handler)
    root.setLevel(old_level)
    handler.close()
  os.makedirs(os.path.join(workdir, 'explorer'))
  for name, state in [('queries', queries.state()), ('url_cache', url_cache.state()),
                      ('dedup', dedup.state())]:
    with open(os.path.join(workdir, 'explorer', f'{name}.json'), 'w') as f:
      json.dump(state, f)
  return counts


ENGINES = {
    'flickr': ({'FLICKR_API_KEY': KEY}, lambda base: Flickr(base_url=base, http=HTTP)),
    'google': ({'GOOGLE_CSE_KEY': KEY, 'GOOGLE_CSE_CX': CX},
               lambda base: GoogleCustomSearch(base_url=base, http=HTTP)),
}


@pytest.mark.parametrize('engine', sorted(ENGINES))
def test_no_path_from_the_web_and_no_key_anywhere(engine, tmp_path, monkeypatch, caplog):
  env, make_engine = ENGINES[engine]
  for var, value in env.items():
    monkeypatch.setenv(var, value)
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # a relative path built from a title would land here
  workdir = tmp_path / 'workdir'
  caplog.set_level(logging.DEBUG)
  counts = run_phase(make_engine, str(workdir))

  # Something was stored, and the troublesome queries did go wrong (and were logged).
  assert counts.get('ok', 0) >= 10, counts
  log_text = (workdir / 'logs' / 'run.log').read_text(encoding='utf-8')
  assert log_text.count('failed') >= 4 and '<redacted>' in log_text, log_text[-3000:]

  # Only our own names, only where we put them: nothing beside the workdir, nothing in cwd.
  assert sorted(os.listdir(tmp_path)) == ['cwd', 'workdir'] and os.listdir(cwd) == []
  files = sorted(os.path.relpath(os.path.join(d, f), workdir)
                 for d, _, names in os.walk(workdir) for f in names)
  dirs = sorted(os.path.relpath(os.path.join(d, s), workdir)
                for d, subdirs, _ in os.walk(workdir) for s in subdirs)
  assert dirs == ['explorer', 'logs', 'web']
  assert files and all(OUR_NAMES.match(f) for f in files), files
  # The hostile strings are data inside the manifests, never names.
  rows = store_lib.WebStore(str(workdir / 'web')).manifest(0)
  assert any('etc/passwd' in r['url'] for r in rows)

  # The key, in any spelling a URL or a log might use, is in no file and no log record.
  spellings = {KEY, urllib.parse.quote(KEY), urllib.parse.quote_plus(KEY), KEY.lower(),
               CX, urllib.parse.quote(CX)}
  for name in files:
    data = (workdir / name).read_bytes()
    for secret in spellings:
      assert secret.encode() not in data, (name, secret)
      assert secret.encode('utf-16-le') not in data, (name, secret)
  for secret in spellings:
    assert secret not in caplog.text
