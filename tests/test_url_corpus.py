"""The URL-corpus engine: a (url, caption) table indexed in streamed, resumable parts,
searched like the local engine, and its URLs fetched live by the guarded downloader.

The 100k-row tests embed with a hashed bag of words (the index's machinery is what they
test; MiniLM at that size takes minutes on CI's CPU); one small table uses the real model.
"""
import asyncio
import csv
import hashlib
import io
import json
import os

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from ie_jax.testing.fault_server import serve_in_thread
from ie_jax.web import download_tool, local, local_index, url_corpus, url_table

WORDS = ['red', 'green', 'blue', 'cat', 'dog', 'bird', 'car', 'boat', 'tree', 'flower',
         'house', 'bridge', 'river', 'mountain', 'cup', 'chair']


class WordHashEmbedder:
  """Unit vectors from hashed words: captions that share words are near (tests only)."""
  dim = 64

  def __init__(self, fail_after_calls: int = -1):
    self.calls = 0
    self.fail_after_calls = fail_after_calls

  def fingerprint(self) -> str:
    return 'word-hash-64'

  def embed(self, texts, *, batch_size=256, progress=True):  # pylint: disable=unused-argument
    if self.calls == self.fail_after_calls:
      raise KeyboardInterrupt('killed mid-build')
    self.calls += 1
    out = np.zeros((len(texts), self.dim), np.float32)
    for i, text in enumerate(texts):
      for word in local.words(text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), 'little')
        out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1)


def caption(i: int) -> str:
  return f'{WORDS[i % 16]} {WORDS[(i // 16) % 16]} photo number {i}'


def write_table(path, rows: int, base: str, bad: bool = True):
  """A CSV of `rows` good rows (image i at BASE/img/i), and 6 bad ones after row 10."""
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['url', 'caption', 'other'])
    for i in range(rows):
      w.writerow([f'{base}/img/{i}', caption(i), 'x'])
      if bad and i == 10:
        w.writerow(['ftp://host/a.jpg', 'an ftp url', 'x'])
        w.writerow(['javascript:alert(1)', 'a script', 'x'])
        w.writerow(['http://bad host/x.jpg', 'a space in the host', 'x'])
        w.writerow([f'{base}/img/blank', '   ', 'x'])
        w.writerow(['http://[::1/x.jpg', 'an unbalanced bracket', 'x'])
        w.writerow([f'{base}/img/huge', 'x' * 200_000, 'x'])  # over csv's field limit


def png(i: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.RandomState(i).randint(0, 256, (48, 48, 3), np.uint8)).save(
      buf, 'PNG')
  return buf.getvalue()


@pytest.fixture(scope='module')
def site():
  hits = []

  async def handle(request):
    hits.append(request.match_info['i'])
    return web.Response(body=png(int(request.match_info['i'])), content_type='image/png')

  app = web.Application()
  app.router.add_get('/img/{i:\\d+}', handle)
  with serve_in_thread(app) as base:
    yield base, hits


@pytest.fixture(scope='module')
def big(site, tmp_path_factory):
  """A 100k-row table and its index."""
  base, _ = site
  root = tmp_path_factory.mktemp('urls')
  table = os.path.join(root, 'table.csv')
  write_table(table, 100_000, base)
  manifest = url_corpus.build(table, os.path.join(root, 'index'), embedder=WordHashEmbedder(),
                              part_rows=16_384, progress=False)
  return table, os.path.join(root, 'index'), manifest


def test_a_100k_row_table_is_indexed_with_its_bad_rows_counted(big):
  _, index_dir, manifest = big
  assert manifest['rows'] == 100_000 and manifest['table_rows'] == 100_006
  assert manifest['skipped'] == {'bad_row': 1, 'bad_url': 4, 'empty_caption': 1}
  index = url_corpus.UrlIndex(index_dir)
  assert len(index) == 100_000 and index.embeddings.dtype == np.float16
  first, last = index.records([0, 99_999])
  assert first['url'].endswith('/img/0') and first['caption'] == caption(0)
  assert last['id'] == 100_005 and last['url'].endswith('/img/99999')  # table row numbers
  assert sorted(os.listdir(index_dir)) == sorted(
      [url_corpus.MANIFEST, url_corpus.RECORDS, url_corpus.OFFSETS, url_corpus.EMBEDDINGS])


def test_search_returns_the_captions_urls_ranked_as_the_local_engine_ranks(big):
  _, index_dir, _ = big
  engine = url_corpus.UrlCorpusEngine(index_dir, embedder=WordHashEmbedder())
  results = asyncio.run(engine.search('blue boat', 20))
  assert len(results) == 20 and [r.rank for r in results] == list(range(20))
  assert all(r.source == 'url_corpus' and r.url.startswith('http://127.0.0.1') for r in results)
  assert all('blue' in r.title or 'boat' in r.title for r in results)
  # The same rows as the local engine's exact search over the same matrix.
  q = WordHashEmbedder().embed(['blue boat'])[0]
  rows = local.nearest(engine.index.embeddings, q, 20)
  assert [r.url for r in results] == [x['url'] for x in engine.index.records(rows)]
  assert asyncio.run(engine.search('   ', 5)) == []


def test_the_results_are_fetched_live_by_the_guarded_downloader(big, site, tmp_path, capsys):
  _, index_dir, _ = big
  base, hits = site
  engine = url_corpus.UrlCorpusEngine(index_dir, embedder=WordHashEmbedder())
  results = asyncio.run(engine.search('red cat', 12))
  urls = tmp_path / 'urls.txt'
  urls.write_text('\n'.join(r.url for r in results) + '\n')
  before = len(hits)
  code = download_tool.main([str(urls), str(tmp_path / 'out'), '--allow_network',
                             '127.0.0.1/32', '--min_side', '32', '--decode_processes', '0'])
  capsys.readouterr()
  assert code == 0 and len(hits) - before == 12
  rows = download_tool.read_results(str(tmp_path / 'out'))
  assert sorted(row['status'] for row in rows.values()) == ['ok'] * 12
  # Without allowing loopback, the guard refuses every one of them.
  code = download_tool.main([str(urls), str(tmp_path / 'refused'), '--min_side', '32',
                             '--decode_processes', '0'])
  capsys.readouterr()
  assert all(row['status'] != 'ok'
             for row in download_tool.read_results(str(tmp_path / 'refused')).values())


class TickingClock:
  """Stands in for `time` in url_corpus: each reading is one second after the last."""

  def __init__(self):
    self.wall = self.cpu = 0.0

  def perf_counter(self):
    self.wall += 1
    return self.wall

  def process_time(self):
    self.cpu += 1
    return self.cpu


def test_a_stopped_build_resumes_with_its_first_missing_part(site, tmp_path, monkeypatch):
  base, _ = site
  # Every part and the join take one second of each clock, whichever session writes them.
  monkeypatch.setattr(url_corpus, 'time', TickingClock())
  table = tmp_path / 'table.csv'
  write_table(table, 10_000, base)
  index_dir = str(tmp_path / 'index')
  per_part = -(-2048 // url_corpus._EMBED_CHUNK)  # pylint: disable=protected-access
  # Killed while embedding the third part of 2,048 rows.
  with pytest.raises(KeyboardInterrupt):
    url_corpus.build(str(table), index_dir,
                     embedder=WordHashEmbedder(fail_after_calls=2 * per_part),
                     part_rows=2048, progress=False)
  assert not os.path.exists(os.path.join(index_dir, url_corpus.MANIFEST))
  with pytest.raises(url_corpus.UrlCorpusError, match='No complete URL-corpus index'):
    url_corpus.UrlIndex(index_dir)
  resumed = WordHashEmbedder()
  manifest = url_corpus.build(str(table), index_dir, embedder=resumed, part_rows=2048,
                              progress=False)
  assert resumed.calls == 3 * per_part  # parts 3, 4 and 5 of 5; parts 1 and 2 were kept
  fresh_dir = str(tmp_path / 'fresh')
  fresh = url_corpus.build(str(table), fresh_dir, embedder=WordHashEmbedder(), part_rows=2048,
                           progress=False)
  timing, fresh_timing = manifest.pop('build'), fresh.pop('build')
  assert manifest == fresh and manifest['rows'] == 10_000
  # The killed session's two parts count in the resumed build's time (each part keeps its
  # own): five parts' worth, like the fresh build's, not the resumed session's three.
  expected = {'parts_seconds': 5.0, 'parts_cpu_seconds': 5.0, 'join_seconds': 1.0,
              'join_cpu_seconds': 1.0}
  assert timing == fresh_timing == expected, (timing, fresh_timing)
  for name in (url_corpus.RECORDS, url_corpus.OFFSETS, url_corpus.EMBEDDINGS):
    with open(os.path.join(index_dir, name), 'rb') as a, open(os.path.join(fresh_dir, name),
                                                               'rb') as b:
      assert a.read() == b.read(), name
  assert not os.path.exists(os.path.join(index_dir, url_corpus.PARTS))


def test_a_rebuild_removes_only_its_own_part_files(site, tmp_path):
  base, _ = site
  table = tmp_path / 'table.csv'
  write_table(table, 3000, base, bad=False)
  index_dir = tmp_path / 'index'
  with pytest.raises(KeyboardInterrupt):
    url_corpus.build(str(table), str(index_dir), embedder=WordHashEmbedder(fail_after_calls=1),
                     part_rows=1000, progress=False)
  mine = index_dir / url_corpus.PARTS / 'notes.txt'
  mine.write_text('a file ie-jax did not write')
  # Another part size is another plan: the old parts go, the user's file stays.
  url_corpus.build(str(table), str(index_dir), embedder=WordHashEmbedder(), part_rows=700,
                   progress=False)
  assert os.listdir(index_dir / url_corpus.PARTS) == ['notes.txt']


def test_a_changed_table_or_another_model_is_refused(site, tmp_path):
  base, _ = site
  table = tmp_path / 'table.csv'
  write_table(table, 500, base, bad=False)
  index_dir = str(tmp_path / 'index')
  url_corpus.build(str(table), index_dir, embedder=WordHashEmbedder(), progress=False)

  class Other(WordHashEmbedder):
    def fingerprint(self):
      return 'another-model'

  with pytest.raises(url_corpus.UrlCorpusError, match='another model'):
    url_corpus.UrlCorpusEngine(index_dir, embedder=Other())
  with open(table, 'a', encoding='utf-8') as f:
    f.write(f'{base}/img/9999,one more row,x\n')
  with pytest.raises(url_corpus.UrlCorpusError, match='changed since it was indexed'):
    url_corpus.UrlCorpusEngine(index_dir, embedder=WordHashEmbedder())
  os.remove(table)  # a deleted table is fine: the index holds what search needs
  assert len(url_corpus.UrlCorpusEngine(index_dir, embedder=WordHashEmbedder()).index) == 500


@pytest.mark.parametrize('kind', ['jsonl', 'tsv', 'parquet'])
def test_jsonl_tsv_and_parquet_tables_with_laion_column_names(tmp_path, kind):
  rows = [{'URL': f'https://example.org/{i}.jpg', 'TEXT': caption(i)} for i in range(50)]
  path = tmp_path / f'table.{kind}'
  if kind == 'jsonl':
    lines = [json.dumps(r) for r in rows] + ['not json', '[1, 2]', json.dumps({'URL': 'x'})]
    path.write_text('\n'.join(lines) + '\n')
  elif kind == 'tsv':
    path.write_text('URL\tTEXT\n' + ''.join(f'{r["URL"]}\t{r["TEXT"]}\n' for r in rows))
  else:
    pq = pytest.importorskip('pyarrow.parquet')
    pa = pytest.importorskip('pyarrow')
    pq.write_table(pa.table({'URL': [r['URL'] for r in rows] + [None],
                             'TEXT': [r['TEXT'] for r in rows] + ['no url']}), str(path),
                   row_group_size=16)
  manifest = url_corpus.build(str(path), str(tmp_path / 'index'), embedder=WordHashEmbedder(),
                              part_rows=20, progress=False)
  assert manifest['columns'] == {'url': 'URL', 'caption': 'TEXT'}
  assert manifest['rows'] == 50
  assert sum(manifest['skipped'].values()) == {'jsonl': 3, 'tsv': 0, 'parquet': 1}[kind]
  index = url_corpus.UrlIndex(str(tmp_path / 'index'))
  assert index.records([49])[0] == {'id': 49, 'url': rows[49]['URL'], 'caption': caption(49)}


def test_a_table_without_the_columns_says_how_to_name_them(tmp_path, capsys):
  path = tmp_path / 'table.csv'
  path.write_text('link,words\nhttps://example.org/a.jpg,a cat\n')
  with pytest.raises(url_table.TableError, match='--url_column'):
    url_corpus.build(str(path), str(tmp_path / 'index'), embedder=WordHashEmbedder())
  manifest = url_corpus.build(str(path), str(tmp_path / 'index'), embedder=WordHashEmbedder(),
                              url_column='link', caption_column='words', progress=False)
  assert manifest['rows'] == 1
  sheet = tmp_path / 'table.xlsx'
  sheet.write_bytes(b'PK')
  assert url_corpus.main(['index', str(sheet), '--out', str(tmp_path / 'x')]) == 1
  assert 'unknown table format' in capsys.readouterr().err


def test_check_url_refuses_what_the_downloader_must_not_fetch():
  good = ['http://a.org/x.jpg', 'https://a.org:8443/x?y=1', 'http://[::1]:80/x']
  bad = ['', 'ftp://a.org/x', 'file:///etc/passwd', 'javascript:x', 'http:///nohost',
         'http://a.org/x y', 'http://a.org/\x00', 'http://a.org:99999/x', 'http://[::1/x',
         'http://a.org/' + 'x' * 3000, None, 42]
  assert [url_table.check_url(u) for u in good] == [''] * len(good)
  assert [url_table.check_url(u) for u in bad] == ['bad_url'] * len(bad)


def test_the_real_minilm_ranks_a_small_table_by_meaning(site, tmp_path):
  base, _ = site
  table = tmp_path / 'table.csv'
  texts = ['a golden retriever puppy on the grass', 'a red sports car on a highway',
           'a bowl of ramen noodles', 'a sailing boat at sea', 'a tabby cat asleep']
  with open(table, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['url', 'text'])
    for i, t in enumerate(texts):
      w.writerow([f'{base}/img/{i}', t])
  embedder = local_index.load_embedder()
  url_corpus.build(str(table), str(tmp_path / 'index'), embedder=embedder, progress=False)
  engine = url_corpus.UrlCorpusEngine(str(tmp_path / 'index'), embedder=embedder)
  assert asyncio.run(engine.search('dog', 1))[0].title == texts[0]
  assert asyncio.run(engine.search('kitten', 1))[0].title == texts[4]
  assert asyncio.run(engine.search('yacht', 1))[0].url == f'{base}/img/3'
  # A run's config reaches it by name.
  from ie_jax.explore import setup as explore_setup  # pylint: disable=g-import-not-at-top
  from ie_jax.utils import config_files  # pylint: disable=g-import-not-at-top
  from ie_jax.web import engines  # pylint: disable=g-import-not-at-top
  config = config_files.load(os.path.join(os.path.dirname(__file__), '..', 'configs', 'demo.py'))
  config.web.engine = 'url_corpus'
  with pytest.raises(ValueError, match='config.web.url_index'):
    explore_setup.make_engine(config, None, engines.QueryCache())
  config.web.url_index = str(tmp_path / 'index')
  made = explore_setup.make_engine(config, None, engines.QueryCache())
  assert made.name == 'url_corpus'
  assert asyncio.run(made.search('puppy', 1))[0].url == f'{base}/img/0'


def test_a_directory_that_is_not_an_index_is_left_alone(site, tmp_path):
  base, _ = site
  table = tmp_path / 'table.csv'
  write_table(table, 100, base, bad=False)
  theirs = tmp_path / 'dataset'
  (theirs / url_corpus.PARTS).mkdir(parents=True)
  files = {url_corpus.MANIFEST: '{"format": "someone-else"}', url_corpus.RECORDS: 'mine',
           os.path.join(url_corpus.PARTS, 'part-000000.npy'): 'mine too'}
  for name, text in files.items():
    (theirs / name).write_text(text)
  with pytest.raises(url_corpus.UrlCorpusError, match='not a URL-corpus index'):
    url_corpus.build(str(table), str(theirs), embedder=WordHashEmbedder(), progress=False)
  assert {name: (theirs / name).read_text() for name in files} == files
  # An index of its own, complete or stopped midway, is rebuilt in place.
  index_dir = str(tmp_path / 'index')
  url_corpus.build(str(table), index_dir, embedder=WordHashEmbedder(), progress=False)
  assert url_corpus.build(str(table), index_dir, embedder=WordHashEmbedder(),
                          progress=False)['rows'] == 100
