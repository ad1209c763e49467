"""The downloader against a fault-injecting loopback server: every job gets the right record."""
import asyncio
import dataclasses
import io
import json
import time

import pytest
from PIL import Image

from ie_jax.testing.fault_server import (COPIES, EXPECTED_FAULTS, EXPECTED_OTHER, FETCH, GOOD,
                                         JPEG, LIMITS, TEST_IMAGE, FaultServer, encode, picture,
                                         serve)
from ie_jax.web import api
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import download, fetch, records

# Threads: these faults race a 0.3 s read timeout, and spawning decode processes (about a
# CPU-second of imports) on a loaded 2-core machine could stall the loopback server past it.
# tests/test_web_download_pool.py checks that processes give the same records.
OPTIONS = download.DownloadOptions(fetch=FETCH, image=LIMITS, decode_processes=0,
                                   decode_workers=2, progress=False)


def forbidden_test_split() -> dedup_lib.DedupIndex:
  index = dedup_lib.DedupIndex()
  index.forbid_image(encode(TEST_IMAGE, 'PNG'), LIMITS)
  return index


def test_every_job_gets_one_record_with_the_right_status():
  server = FaultServer()

  async def go():
    async with serve(server.app()) as base:
      # redirected.jpg is reached only through the redirect.
      jobs = [records.Job(f'{base}/img/{name}', 'q', 'c') for name in GOOD
              if name != 'redirected.jpg']
      jobs.append(records.Job(f'{base}/fault/to-good', 'q', 'c'))
      jobs += [records.Job(f'{base}/fault/{name}', 'q', 'c') for name in EXPECTED_FAULTS]
      jobs.append(records.Job(f'{base}/hop/0', 'q', 'c'))
      jobs += [records.Job(url, 'q', 'c') for url in EXPECTED_OTHER]
      copies = [records.Job(f'{base}/copy/{name}', 'q', 'c') for name in COPIES]
      got = []
      start = time.monotonic()
      dedup = forbidden_test_split()
      counts = await download.Downloader(OPTIONS, dedup).run(jobs, got.append)
      # The copies in a run of their own: which of two near duplicates decoded side by side
      # is kept depends on which finishes first (the search phase orders them; this does not).
      counts += await download.Downloader(OPTIONS, dedup).run(copies, got.append)
      return base, jobs + copies, got, counts, time.monotonic() - start

  base, jobs, got, counts, seconds = asyncio.run(go())
  assert sorted(r.url for r in got) == sorted(j.url for j in jobs)  # one record per job
  status = {r.url.removeprefix(base): r.status for r in got}
  for name in GOOD:
    if name != 'redirected.jpg':
      assert status[f'/img/{name}'] == 'ok', (name, [r.detail for r in got if name in r.url])
  assert status['/fault/to-good'] == 'ok'
  for name, (_, reason) in COPIES.items():
    assert status[f'/copy/{name}'] == reason, name
  for name, reason in EXPECTED_FAULTS.items():
    assert status[f'/fault/{name}'] == reason, (name, [r.detail for r in got if name in r.url])
  assert status['/hop/0'] == 'redirect_limit'
  for url, reason in EXPECTED_OTHER.items():
    assert status[url] == reason, url
  assert all(records.is_reason(r.status) for r in got if r.status != 'ok')

  kept = [r for r in got if r.status == 'ok']
  assert len(kept) == len(GOOD) == counts['ok']
  assert len({r.sha256 for r in kept}) == len(kept)  # every good image exactly once
  for r in kept:
    image = Image.open(io.BytesIO(r.jpeg))
    assert image.format == 'JPEG' and image.mode == 'RGB'
    assert image.size == (r.width, r.height) and min(image.size) == LIMITS.short_side
  # Retries: the 500 was tried 1 + retries times, the 404 once, the 429 then success. aiohttp
  # itself resends once when a reused keep-alive connection dies, hence up to 6 resets.
  assert server.hits['500'] == 3 and 3 <= server.hits['reset'] <= 6
  assert server.hits['404'] == 1 and server.hits['after-429.jpg'] == 2
  assert seconds < 15


def test_repeats_are_not_fetched_and_state_survives_serialisation():
  server = FaultServer()

  async def go():
    async with serve(server.app()) as base:
      dedup, cache = dedup_lib.DedupIndex(), dedup_lib.UrlCache()
      first = [records.Job(f'{base}/img/a.jpg', 'dog', 'dog'),
               records.Job(f'{base}/img/a.jpg#frag', 'puppy', 'dog'),  # the same URL
               records.Job(f'{base}/fault/404', 'dog', 'dog')]
      got1 = []
      await download.Downloader(OPTIONS, dedup, cache).run(first, got1.append)
      # A later iteration, restored from JSON, sees the same URLs and a copy of a.jpg.
      dedup = dedup_lib.DedupIndex.from_state(json.loads(json.dumps(dedup.state())))
      cache = dedup_lib.UrlCache.from_state(json.loads(json.dumps(cache.state())))
      got2 = []

      async def sink(record):  # an async sink is awaited
        got2.append(record)
      second = first[:1] + [first[2], records.Job(f'{base}/copy/a-again.jpg', 'cat', 'cat')]
      await download.Downloader(OPTIONS, dedup, cache).run(second, sink)
      return got1, got2

  got1, got2 = asyncio.run(go())
  assert sorted(r.status for r in got1) == ['duplicate_url', 'http_404', 'ok']
  ok = next(r for r in got1 if r.status == 'ok')
  repeat = next(r for r in got1 if r.status == 'duplicate_url')
  assert repeat.sha256 == ok.sha256 and repeat.jpeg is None
  assert sorted(r.status for r in got2) == ['duplicate_sha256', 'duplicate_url', 'duplicate_url']
  assert server.hits.get('404') == 1  # not fetched again


def test_loopback_is_refused_unless_allowed():
  server = FaultServer()
  closed = download.DownloadOptions(
      fetch=fetch.FetchOptions(retries=0, connect_timeout_s=1.0), image=LIMITS, progress=False)

  async def go():
    async with serve(server.app()) as base:
      port = base.rsplit(':', 1)[1]
      jobs = [records.Job(f'{base}/fault/404'),                      # an IP literal
              records.Job(f'http://localhost:{port}/fault/404'),     # a name -> 127.0.0.1
              records.Job(f'http://[::ffff:127.0.0.1]:{port}/fault/404')]
      got = []
      await download.Downloader(closed).run(jobs, got.append)
      return got

  got = asyncio.run(go())
  assert [r.status for r in got] == ['ssrf_blocked'] * 3, [r.detail for r in got]
  assert server.hits == {}  # refused before any connection


def test_per_host_limit_is_respected():
  server = FaultServer()
  options = download.DownloadOptions(
      fetch=dataclasses.replace(FETCH, per_host=2, max_per_host=2), image=LIMITS,
      progress=False)  # a fixed limit: max_per_host = per_host

  async def go():
    async with serve(server.app()) as base:
      got = []
      jobs = [records.Job(f'{base}/fault/slow?i={i}') for i in range(10)]
      await download.Downloader(options).run(jobs, got.append)
      return got

  got = asyncio.run(go())
  assert [r.status for r in got] == ['ok'] * 10
  assert server.max_in_flight == 2


def test_file_urls_are_read_only_inside_the_roots(tmp_path):
  inside = tmp_path / 'corpus'
  inside.mkdir()
  (inside / 'x.jpg').write_bytes(JPEG)
  (inside / 'empty.jpg').write_bytes(b'')
  (tmp_path / 'secret.jpg').write_bytes(encode(picture(50), 'JPEG'))
  (inside / 'link.jpg').symlink_to(tmp_path / 'secret.jpg')
  rooted = download.DownloadOptions(
      fetch=fetch.FetchOptions(file_roots=(str(inside),)), image=LIMITS, progress=False)
  jobs = [records.Job(f'file://{inside}/x.jpg'), records.Job(f'file://{inside}/empty.jpg'),
          records.Job(f'file://{inside}/missing.jpg'),
          records.Job(f'file://{tmp_path}/secret.jpg'),
          records.Job(f'file://{inside}/../secret.jpg'),
          records.Job(f'file://{inside}/link.jpg'),  # a symlink out of the root
          records.Job(f'file://otherhost{inside}/x.jpg')]
  got = {}
  download.download(jobs, lambda r: got.__setitem__(r.url, r.status), rooted)
  assert [got[j.url] for j in jobs] == [
      'ok', 'empty_body', 'file_error', 'file_not_allowed', 'file_not_allowed',
      'file_not_allowed', 'invalid_url']
  # With no roots configured, file:// is off.
  got = {}
  download.download(jobs[:1], lambda r: got.__setitem__(r.url, r.status), OPTIONS)
  assert list(got.values()) == ['file_not_allowed']


@pytest.mark.parametrize('header, want', [('3', 3.0), ('Wed, 21 Oct 2015 07:28:00 GMT', 0.0),
                                          ('soon', None), (None, None)])
def test_retry_after_parsing(header, want):
  assert api.parse_retry_after(header) == want
