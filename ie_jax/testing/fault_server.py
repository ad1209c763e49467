"""A loopback HTTP server that serves good images, copies of them, and every failure the web offers.

  server = FaultServer()
  async with serve(server.app()) as base:          # 'http://127.0.0.1:PORT'
    jobs = [records.Job(f'{base}/fault/{name}') for name in EXPECTED_FAULTS]

Used by the downloader's tests (`tests/test_web_download.py`), the hostile-web test and
benchmark (`bench/hostile_web.py`). `EXPECTED_FAULTS` and `EXPECTED_OTHER` give the record
status each fault must end in when fetched under `FETCH` and `LIMITS`: the timeouts, byte
cap and pixel limits there are what make 'drip' a timeout, 'over-cap' too large, and so on.
"""
import asyncio
import contextlib
import io
import ipaddress
import socket
import struct
import threading
import zlib

import numpy as np
from aiohttp import web
from PIL import Image

from ie_jax.web import fetch, validate

# The limits under which EXPECTED_FAULTS hold: 48 px is too small, 6 Mpx a bomb, 2 MB over
# the cap, a 5 s stall past the read timeout.
LIMITS = validate.ImageLimits(min_side=64, short_side=128, max_pixels=4_000_000)
FETCH = fetch.FetchOptions(
    concurrency=16, per_host=8, connect_timeout_s=1.0, read_timeout_s=0.3,
    total_timeout_s=3.0, max_bytes=1_000_000, max_redirects=3, retries=2, backoff_s=0.01,
    max_backoff_s=2.0, allow_networks=('127.0.0.1/32',))


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
  """Serves good images, copies of them, and every failure the web offers.

  Args:
    drip_s: how long a 'drip' response stalls after its first 1,000 bytes; anything well
      past the client's read timeout.
  """

  def __init__(self, drip_s: float = 5.0):
    self.drip_s = drip_s
    self.hits = {}
    self.in_flight = self.max_in_flight = 0

  def app(self) -> web.Application:
    app = web.Application()
    app.router.add_get('/img/{name}', self.image)
    app.router.add_get('/copy/{name}', self.copy)
    app.router.add_get('/fault/{name}', self.fault)
    app.router.add_get('/hop/{n}', self.hop)
    app.router.add_get('/redirect', self.redirect)
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

  async def redirect(self, request):
    """/redirect?to=URL: a 302 to anywhere, as a hostile result page would send."""
    self.hit('redirect')
    raise web.HTTPFound(request.query['to'])

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
      await asyncio.sleep(self.drip_s)  # far past the 0.3 s read timeout
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
async def serve(app: web.Application, host: str = '127.0.0.1'):
  """Runs `app` on a free port of `host`; yields its base URL.

  No access log: it would write the full request URLs (query strings with keys included) to
  the test's logs, where they stand for a remote server's logs, not ours.
  """
  runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, access_log=None)
  await runner.setup()
  site = web.TCPSite(runner, host, 0)
  await site.start()
  port = site._server.sockets[0].getsockname()[1]
  try:
    yield f'http://{host}:{port}'
  finally:
    await runner.cleanup()



@contextlib.contextmanager
def serve_in_thread(app: web.Application, host: str = '127.0.0.1'):
  """`serve(app, host)` on an event loop of its own in a daemon thread, for callers that
  run their own event loops (the search phase, subprocesses); yields the base URL."""
  loop = asyncio.new_event_loop()
  ready, box = threading.Event(), {}

  async def main():
    box['stop'] = asyncio.Event()
    async with serve(app, host) as url:
      box['url'] = url
      ready.set()
      await box['stop'].wait()
    # Handlers still asleep (a long drip's stall) would be destroyed pending with the loop.
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in rest:
      task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)

  thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
  thread.start()
  if not ready.wait(10):
    raise RuntimeError('The test server did not start within 10 s.')
  try:
    yield box['url']
  finally:
    loop.call_soon_threadsafe(box['stop'].set)
    thread.join(10)
    loop.close()

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


class FixedResolver:
  """An aiohttp resolver answering from a table, as a DNS server under an attacker's control
  would (any address for any name); names not in the table do not exist.

  Args:
    table: host name -> the addresses it resolves to.
  """

  def __init__(self, table: dict[str, list[str]]):
    self.table = table
    self.asked: list[str] = []

  async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
    self.asked.append(host)
    if host not in self.table:
      raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
    answers = []
    for address in self.table[host]:
      v6 = ipaddress.ip_address(address).version == 6
      answers.append({'hostname': host, 'host': address, 'port': port,
                      'family': socket.AF_INET6 if v6 else socket.AF_INET, 'proto': 0,
                      'flags': socket.AI_NUMERICHOST})
    return answers

  async def close(self) -> None:
    pass
