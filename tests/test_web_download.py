"""The downloader against a fault-injecting loopback server: every job gets the right record."""
import asyncio
import contextlib
import io
import json
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from ie_jax.web import api
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import download, fetch, records, validate

LIMITS = validate.ImageLimits(min_side=64, max_side=128, max_pixels=4_000_000)
FETCH = fetch.FetchOptions(
    concurrency=16, per_host=8, connect_timeout_s=1.0, read_timeout_s=0.3,
    total_timeout_s=3.0, max_bytes=1_000_000, max_redirects=3, retries=2, backoff_s=0.01,
    max_backoff_s=2.0, allow_networks=('127.0.0.1/32',))
OPTIONS = download.DownloadOptions(fetch=FETCH, image=LIMITS, decode_workers=2, progress=False)


def picture(seed: int, size=(320, 240)) -> Image.Image:
  """A smooth random picture: distinct seeds give perceptual hashes far apart."""
  rng = np.random.default_rng(seed)
  coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
  return coarse.resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that declares `width`x`height` and carries almost no data: a bomb's header."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack(
        '>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) +
          chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


TEST_IMAGE = picture(100)  # a "target test split" image that must never be kept
GOOD = {  # path -> (bytes, content type)
    'a.jpg': (encode(picture(1), 'JPEG', quality=92), 'image/jpeg'),
    'b.png': (encode(picture(2).convert('P'), 'PNG'), 'image/png'),
    'c.webp': (encode(picture(3), 'WEBP'), 'image/webp'),
    'd.gif': (encode(picture(4), 'GIF', save_all=True, append_images=[picture(5)]),
              'image/gif'),
    'e.jpg': (encode(picture(6).convert('CMYK'), 'JPEG'), 'image/jpeg'),
    'f.bin': (encode(picture(7), 'JPEG'), 'application/octet-stream'),
    'g.png': (encode(picture(8).convert('LA'), 'PNG'), 'image/png'),
    'after-429.jpg': (encode(picture(9), 'JPEG'), 'image/jpeg'),
    'redirected.jpg': (encode(picture(10), 'JPEG'), 'image/jpeg'),
}
COPIES = {  # path -> (bytes, the reason it must be refused)
    'a-again.jpg': (GOOD['a.jpg'][0], 'duplicate_sha256'),
    'a-small.jpg': (encode(picture(1, (300, 225)), 'JPEG', quality=60), 'near_duplicate'),
    'leak.png': (encode(TEST_IMAGE, 'PNG'), 'test_leak'),
    'leak-resized.jpg': (encode(TEST_IMAGE.resize((200, 150)), 'JPEG', quality=70), 'test_leak'),
}
JPEG = GOOD['a.jpg'][0]


class FaultServer:
  """Serves good images, copies of them, and every failure the web offers."""

  def __init__(self):
    self.hits = {}
    self.in_flight = self.max_in_flight = 0

  def app(self) -> web.Application:
    app = web.Application()
    app.router.add_get('/img/{name}', self.image)
    app.router.add_get('/copy/{name}', self.copy)
    app.router.add_get('/fault/{name}', self.fault)
    app.router.add_get('/hop/{n}', self.hop)
    return app

  def hit(self, key):
    self.hits[key] = self.hits.get(key, 0) + 1
    return self.hits[key]

  async def image(self, request):
    name = request.match_info['name']
    if name == 'after-429.jpg' and self.hit(name) == 1:
      return web.Response(status=429, headers={'Retry-After': '1'})
    body, content_type = GOOD[name]
    return web.Response(body=body, headers={'Content-Type': content_type})

  async def copy(self, request):
    return web.Response(body=COPIES[request.match_info['name']][0], content_type='image/jpeg')

  async def hop(self, request):
    raise web.HTTPFound(f'/hop/{int(request.match_info["n"]) + 1}')

  async def fault(self, request):
    name = request.match_info['name']
    self.hit(name)
    if name == '404':
      return web.Response(status=404)
    if name == '500':
      return web.Response(status=500)
    if name == 'reset':
      sock = request.transport.get_extra_info('socket')
      sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
      request.transport.abort()  # an RST, not a clean close
      return web.Response()
    if name in ('drip', 'cut'):
      response = web.StreamResponse(headers={'Content-Type': 'image/jpeg',
                                             'Content-Length': str(len(JPEG))})
      await response.prepare(request)
      await response.write(JPEG[:1000])
      if name == 'cut':  # the body stops short of its Content-Length
        request.transport.close()
        return response
      await asyncio.sleep(5)  # far past the 0.3 s read timeout
      return response
    if name == 'truncated':  # a consistent response whose JPEG just stops
      return web.Response(body=JPEG[:len(JPEG) // 2], content_type='image/jpeg')
    if name == 'text-plain':
      return web.Response(body=JPEG, content_type='text/plain')
    if name == 'html':
      return web.Response(text='<html><body>Not found</body></html>', content_type='text/html')
    if name == 'html-as-jpeg':
      return web.Response(text='<!doctype html><html></html>', content_type='image/jpeg')
    if name == 'svg':
      return web.Response(text='<svg xmlns="http://www.w3.org/2000/svg"/>',
                          content_type='image/svg+xml')
    if name == 'empty':
      return web.Response(body=b'', content_type='image/jpeg')
    if name == 'bomb':  # past Pillow's own hard limit: refused while reading the header
      return web.Response(body=png_header_only(20000, 20000), content_type='image/png')
    if name == 'big-pixels':  # small file, but over our 4M-pixel limit
      return web.Response(body=encode(Image.new('L', (3000, 2000)), 'PNG'),
                          content_type='image/png')
    if name == 'over-cap':
      return web.Response(body=b'\xff\xd8\xff' + bytes(2_000_000), content_type='image/jpeg')
    if name == 'over-cap-chunked':  # no Content-Length: only streaming can catch it
      response = web.StreamResponse(headers={'Content-Type': 'image/jpeg'})
      response.enable_chunked_encoding()
      await response.prepare(request)
      for _ in range(40):
        await response.write(bytes(64 * 1024))
      return response
    if name == 'tiny':
      return web.Response(body=encode(picture(11, (48, 48)), 'JPEG'), content_type='image/jpeg')
    if name == 'opt-out':
      return web.Response(body=encode(picture(12), 'JPEG'), content_type='image/jpeg',
                          headers={'X-Robots-Tag': 'googlebot: noindex, noai'})
    if name == 'loop-a':
      raise web.HTTPFound('/fault/loop-b')
    if name == 'loop-b':
      raise web.HTTPFound('/fault/loop-a')
    if name == 'to-private':
      raise web.HTTPFound('http://10.0.0.1/x.jpg')
    if name == 'to-metadata':
      raise web.HTTPFound('http://169.254.169.254/latest/meta-data/')
    if name == 'to-file':
      raise web.HTTPFound('file:///etc/passwd')
    if name == 'to-good':
      raise web.HTTPMovedPermanently('/img/redirected.jpg')
    if name == 'slow':  # for the per-host limit
      self.in_flight += 1
      self.max_in_flight = max(self.max_in_flight, self.in_flight)
      await asyncio.sleep(0.05)
      self.in_flight -= 1
      return web.Response(body=encode(picture(200 + int(request.query['i'])), 'JPEG'),
                          content_type='image/jpeg')
    raise AssertionError(name)


@contextlib.asynccontextmanager
async def serve(app: web.Application):
  runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
  await runner.setup()
  site = web.TCPSite(runner, '127.0.0.1', 0)
  await site.start()
  port = site._server.sockets[0].getsockname()[1]
  try:
    yield f'http://127.0.0.1:{port}'
  finally:
    await runner.cleanup()


EXPECTED_FAULTS = {
    '404': 'http_404', '500': 'http_500', 'reset': 'connection_error', 'drip': 'timeout',
    'cut': 'truncated', 'truncated': 'truncated', 'text-plain': 'bad_content_type',
    'html': 'bad_content_type', 'html-as-jpeg': 'unsupported_format',
    'svg': 'bad_content_type', 'empty': 'empty_body', 'bomb': 'decompression_bomb',
    'big-pixels': 'decompression_bomb', 'over-cap': 'too_large',
    'over-cap-chunked': 'too_large', 'tiny': 'too_small', 'opt-out': 'opted_out',
    'loop-a': 'redirect_limit', 'to-private': 'ssrf_blocked', 'to-metadata': 'ssrf_blocked',
    'to-file': 'bad_redirect',
}
EXPECTED_OTHER = {
    'http://': 'invalid_url', 'not a url': 'invalid_url', 'ftp://example.com/a.jpg': 'invalid_url',
    'http://[::1/a.jpg': 'invalid_url', 'http://no-such-host.invalid/a.jpg': 'dns_error',
}


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
      jobs += [records.Job(f'{base}/copy/{name}', 'q', 'c') for name in COPIES]
      jobs += [records.Job(f'{base}/fault/{name}', 'q', 'c') for name in EXPECTED_FAULTS]
      jobs.append(records.Job(f'{base}/hop/0', 'q', 'c'))
      jobs += [records.Job(url, 'q', 'c') for url in EXPECTED_OTHER]
      got = []
      start = time.monotonic()
      counts = await download.Downloader(OPTIONS, forbidden_test_split()).run(
          jobs, got.append)
      return base, jobs, got, counts, time.monotonic() - start

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
    assert image.size == (r.width, r.height) and min(image.size) == LIMITS.max_side
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
      fetch=FETCH.__class__(**{**FETCH.__dict__, 'per_host': 2}), image=LIMITS, progress=False)

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
