"""`python -m ie_jax.web.download URLS OUT`: URL lists in four formats, images and a results
line per URL out, a results table, and a resumed run that fetches nothing twice."""
import collections
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from ie_jax.testing.fault_server import serve_in_thread
from ie_jax.web import corpus, download_tool, records
from ie_jax.web import store as store_lib


def png(seed: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.RandomState(seed).randint(0, 256, (80, 96, 3), np.uint8)).save(
      buf, 'PNG')
  return buf.getvalue()


@pytest.fixture
def site():
  """Images 0-4, a copy of image 0, a 404, an HTML page, and a 503 while `down`."""
  hits = collections.Counter()
  flaky = {'down': True}

  async def handle(request):
    name = request.match_info['name']
    hits[name] += 1
    if name.startswith('img'):
      return web.Response(body=png(int(name[3:])), content_type='image/png')
    if name == 'copy':
      return web.Response(body=png(0), content_type='image/png')
    if name == 'page':
      return web.Response(text='<html></html>', content_type='text/html')
    if name == 'flaky':
      if flaky['down']:
        return web.Response(status=503)
      return web.Response(body=png(9), content_type='image/png')
    return web.Response(status=404)

  app = web.Application()
  app.router.add_get('/{name}', handle)
  with serve_in_thread(app) as base:
    yield base, hits, flaky


def urls_of(base):
  return ([f'{base}/img{i}' for i in range(5)] +
          [f'{base}/copy', f'{base}/missing', f'{base}/page', f'{base}/flaky', 'not a url'])


def run(urls_file, out, capsys):
  code = download_tool.main([str(urls_file), str(out), '--allow_network', '127.0.0.1/32',
                             '--min_side', '32', '--decode_processes', '0'])
  return code, capsys.readouterr().out


def statuses(out):
  return {url: row['status'] for url, row in download_tool.read_results(str(out)).items()}


def test_txt_list_to_files_then_resume(site, tmp_path, capsys):
  base, hits, flaky = site
  listing = tmp_path / 'urls.txt'
  listing.write_text('# a comment\n' + '\n'.join(urls_of(base)) + '\n\n')
  code, printed = run(listing, tmp_path / 'out', capsys)
  assert code == 0
  got = statuses(tmp_path / 'out')
  assert [got[f'{base}/img{i}'] for i in range(5)] == ['ok'] * 5
  assert got[f'{base}/copy'] == 'duplicate_sha256'
  assert got[f'{base}/missing'] == 'http_404'
  assert got[f'{base}/page'] == 'bad_content_type'
  assert got['not a url'] == 'invalid_url'
  assert got[f'{base}/flaky'] == 'http_503'  # after its retries: transient
  rows = download_tool.read_results(str(tmp_path / 'out'))
  for i in range(5):
    path = download_tool.image_path(str(tmp_path / 'out'), rows[f'{base}/img{i}']['sha256'])
    with Image.open(path) as image:
      assert image.format == 'JPEG' and min(image.size) == 80
  assert len([f for _, _, fs in os.walk(tmp_path / 'out' / 'images') for f in fs]) == 5
  assert 'status' in printed and 'ok' in printed and 'total' in printed

  # Resumed: only the transient failure is fetched again; nothing is stored twice.
  flaky['down'] = False
  before = dict(hits)
  hits['flaky'] = 0
  code, printed = run(listing, tmp_path / 'out', capsys)
  assert code == 0
  assert statuses(tmp_path / 'out')[f'{base}/flaky'] == 'ok'
  assert {k: v for k, v in hits.items() if k != 'flaky' and v != before.get(k)} == {}
  assert before['flaky'] >= 2 and hits['flaky'] == 1  # retried within the first run too
  assert '9 done in earlier runs' in printed
  assert len([f for _, _, fs in os.walk(tmp_path / 'out' / 'images') for f in fs]) == 6


@pytest.mark.parametrize('kind', ['csv', 'tsv', 'jsonl', 'parquet'])
def test_table_formats(site, tmp_path, capsys, kind):
  base, _, _ = site
  urls = [f'{base}/img1', f'{base}/img2', '']
  path = tmp_path / f'urls.{kind}'
  if kind in ('csv', 'tsv'):
    sep = '\t' if kind == 'tsv' else ','
    path.write_text(f'caption{sep}link\n' + ''.join(f'x{sep}{u}\n' for u in urls))
  elif kind == 'jsonl':
    path.write_text(''.join(json.dumps({'link': u or None}) + '\n' for u in urls) + '[1]\n')
  else:
    pa = pytest.importorskip('pyarrow')
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    pq.write_table(pa.table({'link': urls}), path)
  found, unusable = download_tool.read_urls(str(path), 'link')
  assert [r.url for r in found] == urls[:2] and unusable == (2 if kind == 'jsonl' else 1)
  code = download_tool.main([str(path), str(tmp_path / 'out'), '--url_column', 'link',
                             '--allow_network', '127.0.0.1/32', '--min_side', '32',
                             '--decode_processes', '0'])
  assert code == 0 and set(statuses(tmp_path / 'out').values()) == {'ok'}


def test_missing_column_and_unknown_format_say_what_to_do(tmp_path, capsys):
  (tmp_path / 'a.csv').write_text('link\nhttp://x/\n')
  assert download_tool.main([str(tmp_path / 'a.csv'), str(tmp_path / 'o')]) == 2
  assert 'pass --url_column' in capsys.readouterr().err
  (tmp_path / 'a.xml').write_text('<urls/>')
  assert download_tool.main([str(tmp_path / 'a.xml'), str(tmp_path / 'o')]) == 2
  assert '.jsonl' in capsys.readouterr().err


def test_loopback_needs_allow_network(site, tmp_path, capsys):
  base, hits, _ = site
  (tmp_path / 'u.txt').write_text(f'{base}/img1\n')
  assert download_tool.main([str(tmp_path / 'u.txt'), str(tmp_path / 'o'),
                             '--decode_processes', '0']) == 0
  assert statuses(tmp_path / 'o') == {f'{base}/img1': 'ssrf_blocked'}
  assert hits['img1'] == 0


def test_runs_as_a_module(tmp_path):
  (tmp_path / 'u.txt').write_text('not a url\n')
  done = subprocess.run([sys.executable, '-m', 'ie_jax.web.download', str(tmp_path / 'u.txt'),
                         str(tmp_path / 'o'), '--decode_processes', '0'],
                        capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr
  assert 'invalid_url' in done.stdout


def test_captions_and_keys_make_an_indexable_corpus(site, tmp_path, capsys):
  base, _, _ = site
  listing = tmp_path / 'urls.csv'
  listing.write_text('id,url,caption\n'
                     f'a1,{base}/img1,a red fox\n'
                     f'a2,{base}/missing,gone\n'
                     f'a3,{base}/img2,"two words, one comma"\n'
                     f'a4,{base}/img1,the same URL again\n')
  assert download_tool.main([str(listing), str(tmp_path / 'out'), '--key_column', 'id',
                             '--allow_network', '127.0.0.1/32', '--min_side', '32',
                             '--decode_processes', '0']) == 0
  rows = download_tool.read_results(str(tmp_path / 'out'))
  assert {u: (r['row'], r['key'], r['status']) for u, r in rows.items()} == {
      f'{base}/img1': (0, 'a1', 'ok'), f'{base}/missing': (1, 'a2', 'http_404'),
      f'{base}/img2': (2, 'a3', 'ok')}
  scan = corpus.scan(str(tmp_path / 'out'), progress=False)  # what the offline engine indexes
  assert sorted(e.caption for e in scan.entries) == ['a red fox', 'two words, one comma']
  assert all((tmp_path / 'out' / e.file).is_file() for e in scan.entries)


def sharded_run(base, tmp_path, output_format: str, bad_row: str) -> list[str]:
  """The arguments of a run over images 0-4 (captioned 'picture I') and one bad URL,
  into `tmp_path/out` in shards of 2."""
  listing = tmp_path / 'urls.csv'
  listing.write_text('url,caption\n' + ''.join(f'{base}/img{i},picture {i}\n' for i in range(5))
                     + bad_row + '\n')
  return [str(listing), str(tmp_path / 'out'), '--output_format', output_format,
          '--shard_size', '2', '--allow_network', '127.0.0.1/32', '--min_side', '32',
          '--decode_processes', '0']


def resume_after_kill(out, args, hits, lost) -> None:
  """Resumes a run killed before the shard holding `lost` (URLs) committed: their result
  lines were never written; exactly they are fetched again."""
  kept = [line for line in (out / 'results.jsonl').read_text().splitlines()
          if json.loads(line)['url'] not in lost]
  (out / 'results.jsonl').write_text('\n'.join(kept) + '\n')
  before = dict(hits)
  assert download_tool.main(args) == 0
  assert {k for k, v in hits.items() if v != before.get(k)} == {u.rsplit('/', 1)[1] for u in lost}


def test_webdataset_shards_commit_whole_and_resume(site, tmp_path, capsys):
  """--output_format webdataset: full shards of `shard_size`, each image with its caption
  and result; a shard a killed run left unfinished is dropped and its images fetched again."""
  base, hits, _ = site
  out = tmp_path / 'out'
  args = sharded_run(base, tmp_path, 'webdataset', f'{base}/missing,gone')
  assert download_tool.main(args) == 0
  capsys.readouterr()
  shards = sorted(os.listdir(out / 'shards'))
  assert shards == ['shard-000000.tar', 'shard-000001.tar', 'shard-000002.tar']
  rows = download_tool.read_results(str(out))
  members = {}
  for name in shards:
    with tarfile.open(out / 'shards' / name) as tar:
      for member in tar.getmembers():
        members[member.name] = tar.extractfile(member).read()
  assert len(members) == 5 * 3
  for i in range(5):
    sha = rows[f'{base}/img{i}']['sha256']
    assert members[f'{sha}.txt'].decode() == f'picture {i}'
    assert json.loads(members[f'{sha}.json'])['url'] == f'{base}/img{i}'
    with Image.open(io.BytesIO(members[f'{sha}.jpg'])) as image:
      assert image.format == 'JPEG'
  assert rows[f'{base}/missing']['status'] == 'http_404'
  scan = corpus.scan(str(out), progress=False)  # the offline engine indexes the shards
  assert sorted(e.caption for e in scan.entries) == [f'picture {i}' for i in range(5)]

  # A run killed while writing its last shard leaves it as a .tmp, with no result lines
  # for its images (test_a_shard_s_results_wait_for_its_commit). The resumed run drops it
  # and fetches exactly those images again.
  last = out / 'shards' / 'shard-000002.tar'
  lost = {json.loads(m)['url'] for n, m in _members(last).items() if n.endswith('.json')}
  os.replace(last, str(last) + '.tmp')
  resume_after_kill(out, args, hits, lost)
  assert sorted(os.listdir(out / 'shards')) == shards  # the .tmp is gone, a new 000002
  assert sorted(e.caption for e in corpus.scan(str(out), progress=False).entries) == [
      f'picture {i}' for i in range(5)]


def test_a_shard_s_results_wait_for_its_commit(tmp_path):
  rows = {f'u{i}': download_tool.Row(i, f'u{i}', str(i), f'c{i}') for i in range(3)}
  ok = lambda i: records.Record(f'u{i}', '', '', 'ok', sha256=f'{i:064x}', jpeg=b'jpeg')
  sink = download_tool.TarSink(str(tmp_path), rows, shard_size=2)
  results = tmp_path / download_tool.RESULTS
  sink(ok(0))
  sink(records.Record('u2', '', '', 'http_404'))
  assert [json.loads(l)['url'] for l in results.read_text().splitlines()] == ['u2']
  assert os.listdir(tmp_path / 'shards') == ['shard-000000.tar.tmp']
  sink(ok(1))  # the shard is full: renamed, then its results written
  assert [json.loads(l)['url'] for l in results.read_text().splitlines()] == ['u2', 'u0', 'u1']
  assert os.listdir(tmp_path / 'shards') == ['shard-000000.tar']
  sink.close()


def _members(path) -> dict:
  with tarfile.open(path) as tar:
    return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_bad_shard_size_is_refused(tmp_path, capsys):
  (tmp_path / 'urls.txt').write_text('http://example.com/a.jpg\n')
  with pytest.raises(SystemExit):
    download_tool.main([str(tmp_path / 'urls.txt'), str(tmp_path / 'out'),
                        '--output_format', 'webdataset', '--shard_size', '0'])
  assert '--shard_size must be at least 1' in capsys.readouterr().err


def test_array_record_parts_hold_every_kept_image_and_resume(site, tmp_path, capsys):
  base, hits, _ = site
  out = tmp_path / 'out'
  args = sharded_run(base, tmp_path, 'array_record', f'{base}/page,a page')
  assert download_tool.main(args) == 0
  capsys.readouterr()
  store = store_lib.WebStore(str(out / 'array_record'))
  assert len(store.parts(0)) == 3 and store.num_images(0) == 5
  rows = download_tool.read_results(str(out))
  manifest = store.manifest(0)
  assert sorted(r['caption'] for r in manifest) == [f'picture {i}' for i in range(5)]
  for r in manifest:
    assert rows[r['url']]['sha256'] == r['sha256']
    with Image.open(io.BytesIO(store.read(0, r['index']))) as image:
      assert image.format == 'JPEG'
  assert rows[f'{base}/page']['status'] == 'bad_content_type'
  store.close()
  # A killed run's part in progress: a .tmp pair without result lines; resumed, those
  # images (and only they) are fetched again into a new part.
  part = 'images-00000-002.array_record'
  part_manifest = out / 'array_record' / 'manifest-00000-002.jsonl'
  lost = [json.loads(line)['url'] for line in part_manifest.read_text().splitlines()]
  assert len(lost) == 1
  for name in (part, part.replace('images-', 'manifest-').replace('.array_record', '.jsonl')):
    os.replace(out / 'array_record' / name, out / 'array_record' / (name + '.tmp'))
  resume_after_kill(out, args, hits, lost)
  again = store_lib.WebStore(str(out / 'array_record'))
  assert again.num_images(0) == 5 and not any(n.endswith('.tmp') for n in os.listdir(again.root))


def test_a_resumed_run_deletes_only_its_own_unfinished_shards(tmp_path):
  """OUT is a directory the user named: files ie-jax did not write there survive."""
  rows = {}
  (tmp_path / 'shards').mkdir()
  (tmp_path / 'array_record').mkdir()
  theirs = [tmp_path / 'shards' / 'mine.tar.tmp', tmp_path / 'shards' / 'notes.tmp',
            tmp_path / 'array_record' / 'draft.tmp']
  ours = [tmp_path / 'shards' / 'shard-000003.tar.tmp',
          tmp_path / 'array_record' / 'images-00000-001.array_record.tmp',
          tmp_path / 'array_record' / 'manifest-00000-001.jsonl.tmp']
  for path in theirs + ours:
    path.write_bytes(b'x')
  download_tool.TarSink(str(tmp_path), rows, shard_size=2).close()
  download_tool.ArrayRecordSink(str(tmp_path), rows, shard_size=2).close()
  assert all(path.exists() for path in theirs)
  assert not any(path.exists() for path in ours)
