"""`python -m ie_jax.web.download URLS OUT`: URL lists in four formats, images and a results
line per URL out, a results table, and a resumed run that fetches nothing twice."""
import collections
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from ie_jax.testing.fault_server import serve_in_thread
from ie_jax.web import corpus, download_tool


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
