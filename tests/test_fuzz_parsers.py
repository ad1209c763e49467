"""Property-based fuzzing of everything that parses text from outside: API answers, headers,
captions tables, index files and store manifests. Each may only fail with its documented
error type; anything else (KeyError, TypeError, RecursionError...) is a bug.

Examples are derandomized, so a run is reproducible and CI sees the same inputs every time.
"""
import asyncio
import json
import math
import os
import shutil
import tarfile
import tempfile
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ie_jax.web import api, corpus, local_index
from ie_jax.web import store as store_lib
from ie_jax.web.clip_retrieval import ClipRetrieval
from ie_jax.web.flickr import Flickr
from ie_jax.web.google_cse import GoogleCustomSearch
from ie_jax.web.openverse import Openverse
from ie_jax.web.wikimedia import WikimediaCommons

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
HTTP = api.HttpOptions(timeout_s=1, retries=1, backoff_s=0.001, max_backoff_s=0.01)
KEYS = {'FLICKR_API_KEY': 'fuzz-flickr-key', 'GOOGLE_CSE_KEY': 'fuzz-google-key',
        'GOOGLE_CSE_CX': 'fuzz-cx'}

# JSON as a hostile server might send it: any shape, odd numbers, odd strings.
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=30)
           | st.sampled_from(['http://a.test/x.jpg', 'https://b.test/y.png', 'http://', 'ftp://c/',
                              '../../etc/passwd', 'javascript:alert(1)', '', 'ok', 'fail']))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def near(keys: dict) -> st.SearchStrategy:
  """Objects with the API's real keys, each value either well-typed or any JSON at all."""
  return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()})


urls = st.sampled_from(['http://a.test/1.jpg', 'https://b.test/2.jpg', 'https://a.test/1.jpg',
                        'http://', 'not a url', 'https://c.test/' + 'x' * 300])
titles = st.text(max_size=20) | st.sampled_from(['../../etc/passwd', 'a/b\x00c', '/'])
small_ints = st.integers(-2, 30)

openverse_bodies = near({'results': st.lists(near({'url': urls, 'title': titles}), max_size=6),
                         'page_count': small_ints})
flickr_photo = near({'url_z': urls, 'url_n': urls, 'title': titles,
                     'server': st.sampled_from(['65535', 'a/b', 7]),
                     'id': st.sampled_from(['123', '../x', 9]), 'secret': st.sampled_from(['ab1', '?q'])})
flickr_bodies = near({'stat': st.sampled_from(['ok', 'fail']), 'code': small_ints,
                      'message': titles,
                      'photos': near({'photo': st.lists(flickr_photo, max_size=6),
                                      'pages': small_ints})})
wiki_page = near({'title': titles, 'index': small_ints,
                  'imageinfo': st.lists(near({'url': urls, 'thumburl': urls}), max_size=2)})
wikimedia_bodies = near({'query': near({'pages': st.lists(wiki_page, max_size=6)}),
                         'continue': near({'gsroffset': small_ints}),
                         'error': near({'code': st.sampled_from(['maxlag', 'ratelimited', 'x'])
                                        | json_values, 'info': titles})})
clip_bodies = st.lists(near({'url': urls, 'caption': titles}), max_size=8) | near(
    {'error': titles})
google_bodies = near({'items': st.lists(near({'link': urls, 'title': titles}), max_size=6),
                      'queries': near({'nextPage': json_values})})

ENGINES = {  # name -> (constructor, strategy of one API answer)
    'openverse': (lambda: Openverse(http=HTTP), openverse_bodies),
    'flickr': (lambda: Flickr(http=HTTP), flickr_bodies),
    'wikimedia': (lambda: WikimediaCommons(http=HTTP), wikimedia_bodies),
    'clip_retrieval': (lambda: ClipRetrieval(http=HTTP), clip_bodies),
    'google': (lambda: GoogleCustomSearch(http=HTTP), google_bodies),
}


def run_search(name: str, answers: list, n: int):
  """The engine's search with its API answering `answers` in turn (then `{}` forever).

  Returns `(results, requests made)`; raises what the search raises.
  """
  with mock.patch.dict(os.environ, KEYS):
    engine = ENGINES[name][0]()
  calls = []

  async def request(session, method, url, *, params=None, json_body=None, form=None,
                    headers=None):
    del session, method, url, params, json_body, form, headers
    calls.append(1)
    return answers[len(calls) - 1] if len(calls) <= len(answers) else {}

  engine._client.request = request  # pylint: disable=protected-access
  return asyncio.run(engine.search('fuzz', n)), len(calls)


def check_results(name: str, results, n: int) -> None:
  assert isinstance(results, list) and len(results) <= n
  assert [r.rank for r in results] == list(range(len(results)))
  assert len({r.url for r in results}) == len(results)
  for r in results:
    assert api.is_http_url(r.url) and isinstance(r.title, str) and r.source == name


def fuzz_engine(name: str):
  @FUZZ
  @given(answers=st.lists(ENGINES[name][1] | json_values, min_size=1, max_size=3),
         n=st.integers(1, 12))
  def test(answers, n):
    try:
      results, _ = run_search(name, answers, n)
    except api.EngineError:
      return
    check_results(name, results, n)
  test.__name__ = f'test_{name}_parser_raises_only_engine_error'
  return test


test_openverse_parser = fuzz_engine('openverse')
test_flickr_parser = fuzz_engine('flickr')
test_wikimedia_parser = fuzz_engine('wikimedia')
test_clip_retrieval_parser = fuzz_engine('clip_retrieval')
test_google_parser = fuzz_engine('google')


def test_endless_paging_ends():
  """An API that always claims another page of useless items cannot keep a search going."""
  useless = {'url': 'nope', 'link': 'nope', 'title': 't'}
  endless = {
      'openverse': lambda i: {'results': [useless], 'page_count': 10**6},
      'flickr': lambda i: {'stat': 'ok', 'photos': {'photo': [useless], 'pages': 10**6}},
      'wikimedia': lambda i: {'query': {'pages': [{'title': 'x', 'imageinfo': [useless]}]},
                              'continue': {'gsroffset': 50 * (i + 1)}},
      'google': lambda i: {'items': [useless], 'queries': {'nextPage': [{}]}},
  }
  for name, page in endless.items():
    results, calls = run_search(name, [page(i) for i in range(5000)], 10)
    assert results == [] and calls <= 400, (name, calls)


# Raw bytes through the JSON client: status, headers and body all hostile.

class _Response:
  def __init__(self, status, body, headers):
    self.status, self._body, self.headers = status, body, headers

  async def read(self):
    return self._body

  async def __aenter__(self):
    return self

  async def __aexit__(self, *unused):
    return False


class _Session:
  def __init__(self, answers):
    self._answers = list(answers)

  def request(self, method, url, params=None, json=None, data=None, headers=None):
    del method, url, params, json, data, headers
    return _Response(*self._answers.pop(0)) if self._answers else _Response(503, b'', {})


raw_bodies = (st.binary(max_size=200)
              | st.builds(lambda v: json.dumps(v).encode(), json_values)
              | st.sampled_from([b'[' * 5000, b'{"a":' * 5000, b'1' * 5000,
                                 b'\xff\xfe{\x00}\x00', b'"\\ud800"', b'NaN', b'-Infinity']))
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 404, 429, 500, 503])
retry_after = st.none() | st.text(max_size=30) | st.sampled_from(
    ['1', '0', '99999999999999999999', '\u00b2', '\u0663', 'Wed, 21 Oct 2015 07:28:00 GMT',
     'Mon, 01 Jan 99999 00:00:00 GMT', 'Fri, 31 Dec 9999 23:59:60 +9999'])


@FUZZ
@given(answers=st.lists(st.tuples(statuses, raw_bodies, retry_after), min_size=1, max_size=2))
def test_json_client_raises_only_engine_error(answers):
  client = api.JsonClient('fuzz', HTTP, secrets=('s3cr3t',))
  session = _Session([(s, b, {} if r is None else {'Retry-After': r}) for s, b, r in answers])
  try:
    body = asyncio.run(client.request(session, 'GET', 'http://api.test/'))
  except api.EngineError:
    return
  json.dumps(body)  # what it returns is plain JSON


@FUZZ
@given(value=st.none() | st.text(max_size=40) | retry_after)
def test_retry_after_is_a_non_negative_number_or_none(value):
  got = api.parse_retry_after(value)
  assert got is None or (isinstance(got, float) and got >= 0 and not math.isnan(got))


# The local engine's corpus: captions tables and tar captions are untrusted text.

table_lines = st.lists(
    st.builds(lambda v: json.dumps(v), near({'file': st.sampled_from(
        ['a.jpg', '../a.jpg', '/etc/passwd', 'sub/../a.jpg', 'a.jpg\x00', '']),
        'caption': titles}) | json_values)
    | st.text(max_size=40)
    | st.sampled_from(['[' * 5000, '{"file": "a.jpg", "caption": ' + '1' * 5000 + '}']),
    max_size=6)


def _scan(files: dict) -> corpus.Scan | None:
  with tempfile.TemporaryDirectory() as root:
    with open(os.path.join(root, 'a.jpg'), 'wb') as f:
      f.write(b'\xff\xd8\xff')
    for name, data in files.items():
      with open(os.path.join(root, name), 'wb') as f:
        f.write(data)
    try:
      found = corpus.scan(root, progress=False)
    except corpus.CorpusError:
      return None
    for entry in found.entries:  # every entry stays inside the root
      assert entry.file == 'a.jpg' or entry.tar
    return found


@FUZZ
@given(lines=table_lines, junk=st.binary(max_size=40))
def test_captions_jsonl_raises_only_corpus_error(lines, junk):
  _scan({'captions.jsonl': '\n'.join(lines).encode() + junk})


@FUZZ
@given(rows=st.lists(st.lists(st.text(max_size=12), max_size=3), max_size=5),
       header=st.sampled_from(['file,caption', 'caption,file', 'x,y', '']),
       junk=st.binary(max_size=20))
def test_captions_csv_raises_only_corpus_error(rows, header, junk):
  text = header + '\n' + '\n'.join(','.join(r) for r in rows)
  _scan({'captions.csv': text.encode() + junk})


@FUZZ
@given(members=st.lists(st.tuples(st.sampled_from(['k.jpg', 'k.txt', 'k.json', 'j.png',
                                                    'a/b.jpg', 'a/b.json', '../x.jpg']),
                                   st.binary(max_size=30) | st.sampled_from(
                                       [b'{"caption": "a dog"}', b'[' * 3000,
                                        b'{"caption": ' + b'9' * 5000 + b'}'])),
                         max_size=5),
       cut=st.integers(0, 3000))
def test_tar_shard_raises_only_corpus_error(members, cut):
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'shard.tar')
    with tarfile.open(path, 'w') as tar:
      for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        with tempfile.TemporaryFile() as f:
          f.write(data)
          f.seek(0)
          tar.addfile(info, f)
    with open(path, 'rb') as f:
      data = f.read()
  _scan({'shard.tar': data[:cut] if cut < len(data) else data})


# The local engine's index: its files may be damaged on disk.

_INDEXES = {}


def _index(tmp: str) -> str:
  """A copy, under `tmp`, of a two-image keyword-only corpus with its index (built once)."""
  if 'root' not in _INDEXES:
    root = os.path.join(tempfile.mkdtemp(), 'corpus')
    os.makedirs(root)
    for name in ('a.jpg', 'b.jpg'):
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\xff\xd8\xff')
    with open(os.path.join(root, 'captions.jsonl'), 'w') as f:
      f.write('{"file": "a.jpg", "caption": "a red fox"}\n{"file": "b.jpg", "caption": "cup"}\n')
    local_index.build(root, keyword_only=True, progress=False)
    _INDEXES['root'] = root
  root = os.path.join(tmp, 'corpus')
  shutil.copytree(_INDEXES['root'], root)  # keeps mtimes: the copy is fresh
  return local_index.default_index_dir(root)


@FUZZ
@given(which=st.sampled_from([local_index.MANIFEST, local_index.RECORDS]),
       edit=st.sampled_from(['replace', 'json', 'field']),
       data=st.binary(max_size=60) | st.sampled_from([b'[' * 5000, b'9' * 5000]),
       value=json_values, field=st.sampled_from(
           ['rows', 'corpus_dir', 'sources', 'embeddings', 'content_sha256', 'caption', 'file',
            'tar', 'member', 'version', 'format']))
def test_local_index_reader_raises_only_local_index_error(which, edit, data, value, field):
  with tempfile.TemporaryDirectory() as tmp:
    index_dir = _index(tmp)
    path = os.path.join(index_dir, which)
    if edit == 'replace':
      content = data
    else:
      with open(path, encoding='utf-8') as f:  # the manifest is one object, records a line each
        rows = [json.load(f)] if which == local_index.MANIFEST else [
            json.loads(line) for line in f]
      if edit == 'json':
        rows[0] = value
      else:
        rows[0][field] = value
      content = '\n'.join(json.dumps(r) for r in rows).encode()
    with open(path, 'wb') as f:
      f.write(content)
    try:
      index = local_index.load(index_dir)
    except local_index.LocalIndexError:
      return
    assert len(index.captions) == len(index.urls) == index.manifest['rows']


# The store's manifests: the explorer re-reads them on every resume.

manifest_rows = near({'status': st.sampled_from(['ok', 'http_404', 'too_small']),
                      'part_index': small_ints, 'url': urls, 'sha256': st.text(max_size=4),
                      'phash': st.text(max_size=4)})


@FUZZ
@given(lines=st.lists(st.builds(json.dumps, manifest_rows | json_values)
                      | st.text(max_size=30), max_size=6),
       junk=st.binary(max_size=20) | st.sampled_from([b'', b'[' * 5000, b'\n' + b'7' * 5000]))
def test_store_manifest_reader_raises_only_value_error(lines, junk):
  with tempfile.TemporaryDirectory() as root:
    open(os.path.join(root, 'images-00000-000.array_record'), 'wb').close()
    with open(os.path.join(root, 'manifest-00000-000.jsonl'), 'wb') as f:
      f.write('\n'.join(lines).encode() + junk)
    try:
      rows = store_lib.WebStore(root).manifest(0)
    except ValueError:
      return
    for row in rows:
      assert isinstance(row, dict) and row['iteration'] == 0
      if row.get('status') == 'ok':
        assert isinstance(row['index'], int)
