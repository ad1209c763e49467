r"""The hostile web, side by side: ie-jax's downloader CLI and img2dataset on one URL list.

  python bench/hostile_vs_img2dataset.py --img2dataset_python /path/to/venv/bin/python \
      [--urls 2000] [--bad 0.4] [--latency_ms 100,300]

Two loopback servers: the "public" web on 127.0.0.1 (the fault server's faults, plus
distinct good JPEGs) and an "internal" service on 127.0.0.2 that no downloader should ever
reach and that counts every request it gets. A share `--bad` of the list is bad, spread
evenly over: every fault of `fault_server.EXPECTED_FAULTS` (timeouts, truncations, wrong
types, decompression bombs, bodies over the cap, redirect loops, redirects to private and
metadata addresses and to file://; not 'big-pixels', an image at both tools' defaults),
redirects to the internal service (SSRF), URLs of the
internal service itself, host names the IDNA codec rejects and redirects to them (they
crashed ie-jax before issue #22), repeated URLs and byte-identical copies of good images
under other URLs. Both tools get the same list as a text file and run as child processes
at their defaults (ie-jax: `--allow_network 127.0.0.1/32`, the public web; img2dataset: 64
px files). Counted from each tool's own output:

- good images stored once / stored twice (a repeat or a copy stored beside its original)
  / lost; bad URLs stored (anything but a good image or its first copy kept); SSRF
  followed (requests the internal service received); wall and CPU time, peak RSS.

img2dataset is not a dependency: give a python that has it. Prints a table; JSON to
bench/results/hostile_vs_img2dataset[_LO_HIms].json.
"""
import argparse
import asyncio
import glob
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from ie_jax.testing import fault_server
from ie_jax.web import download_tool
import results_io  # bench/, the script's own directory

INVALID_HOSTS = ['bad..host.invalid', 'x' * 70 + '.invalid', 'xn--.invalid']


def public_app(internal: str, server: fault_server.FaultServer,
               latency_ms=(0, 0)) -> web.Application:
  app = server.app()
  pictures = {}
  rng = random.Random(0)

  @web.middleware
  async def latency(request, handler):  # a far server: every answer waits lo-hi ms
    if latency_ms[1] > 0:
      await asyncio.sleep(rng.uniform(*latency_ms) / 1000)
    return await handler(request)

  app.middlewares.append(latency)

  async def good(request):
    seed = int(request.match_info['seed'])
    if seed not in pictures:  # distinct pictures: far apart in pHash, so none is a near-copy
      pictures[seed] = fault_server.encode(fault_server.picture(10_000 + seed), 'JPEG',
                                           quality=90)
    return web.Response(body=pictures[seed], content_type='image/jpeg')

  async def to_internal(request):
    raise web.HTTPFound(f'{internal}/secret/{request.match_info["i"]}')

  async def to_invalid(request):
    host = INVALID_HOSTS[int(request.match_info['i']) % len(INVALID_HOSTS)]
    raise web.HTTPFound(f'http://{host}/x.jpg')

  app.router.add_get('/good/{seed}', good)
  app.router.add_get('/same/{seed}/{copy}', good)  # the same bytes under another URL
  app.router.add_get('/to-internal/{i}', to_internal)
  app.router.add_get('/to-invalid/{i}', to_invalid)
  return app


def url_list(public: str, internal: str, n: int, bad_share: float):
  """(urls, kinds, good key per url): kind 'good', 'repeat' or 'copy' (of a good image:
  must not be stored a second time), or a bad kind."""
  # 'big-pixels' (a 6 Mpx black PNG) is a bomb only under the fault server's test limits;
  # at both tools' defaults it is an image.
  bad_kinds = ([f'fault:{name}' for name in fault_server.EXPECTED_FAULTS
                if name != 'big-pixels'] +
               ['redirect-to-internal', 'internal', 'invalid-host',
                'redirect-to-invalid-host', 'repeat', 'copy'])
  n_bad = int(n * bad_share)
  urls, kinds, keys = [], [], []
  for i in range(n - n_bad):
    urls.append(f'{public}/good/{i}')
    kinds.append('good')
    keys.append(i)
  for j in range(n_bad):
    kind = bad_kinds[j % len(bad_kinds)]
    seed = j % max(1, n - n_bad)
    url = {'redirect-to-internal': f'{public}/to-internal/{j}',
           'internal': f'{internal}/secret/direct-{j}',
           'invalid-host': f'http://{INVALID_HOSTS[j % 3]}/{j}.jpg',
           'redirect-to-invalid-host': f'{public}/to-invalid/{j}',
           'repeat': f'{public}/good/{seed}',
           'copy': f'{public}/same/{seed}/{j}'}.get(kind)
    if url is None:  # a fault server fault; a query keeps the URLs distinct
      url = f'{public}/fault/{kind.split(":", 1)[1]}?j={j}'
    urls.append(url)
    kinds.append(kind)
    keys.append(seed if kind in ('repeat', 'copy') else None)
  return urls, kinds, keys


def child(cmd: list[str], env=None) -> dict:
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if done.returncode:
    print(done.stderr[-3000:], file=sys.stderr)
    raise RuntimeError(f'{cmd[:3]} exited with {done.returncode}')
  return {'wall_s': round(wall, 1),
          'cpu_s': round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
          # ru_maxrss of children is the largest of any child so far (KiB on Linux).
          'peak_rss_mib': round(after.ru_maxrss / 1024)}


def score(stored_urls: list[str], urls, kinds, keys, internal_hits: int) -> dict:
  """Counts from the list of URLs a tool reports as stored (a URL listed twice: stored twice)."""
  kind_of = {}
  for url, kind, key in zip(urls, kinds, keys):
    kind_of.setdefault(url, (kind, key))  # a repeated URL is its first (good) entry
  times = {}
  for url in stored_urls:
    times[url] = times.get(url, 0) + 1
  per_good, bad_kinds = {}, {}
  bad = 0
  for url, count in times.items():
    kind, key = kind_of.get(url, ('unknown', None))
    if kind == 'good' or kind == 'copy':
      per_good[key] = per_good.get(key, 0) + count
    else:
      bad += count
      bad_kinds[kind] = bad_kinds.get(kind, 0) + count
  goods = [k for k, kind in zip(keys, kinds) if kind == 'good']
  return {'good': len(goods),
          'good_stored_once': sum(per_good.get(k, 0) == 1 for k in goods),
          'good_stored_twice_or_more': sum(per_good.get(k, 0) > 1 for k in goods),
          'good_lost': sum(per_good.get(k, 0) == 0 for k in goods),
          'bad_stored': bad, 'bad_stored_by_kind': dict(sorted(bad_kinds.items())),
          'ssrf_requests_received': internal_hits}


def run_ie_jax(url_file: str, out: str, extra=()) -> tuple[list[str], dict]:
  cost = child([sys.executable, '-m', 'ie_jax.web.download', url_file, out,
                '--allow_network', '127.0.0.1/32', *extra])
  stored = [url for url, row in download_tool.read_results(out).items()
            if row['status'] == 'ok']
  return stored, cost


def run_img2dataset(python: str, url_file: str, out: str) -> tuple[list[str], dict]:
  cost = child([python, '-c', 'from img2dataset.main import main; main()',
                f'--url_list={url_file}', '--input_format=txt', '--output_format=files',
                f'--output_folder={out}', '--image_size=64', '--resize_mode=keep_ratio',
                '--enable_wandb=False'],
               env={**os.environ, 'NO_ALBUMENTATIONS_UPDATE': '1', 'WANDB_MODE': 'disabled'})
  stored = []
  for meta in glob.glob(os.path.join(out, '*', '*.json')):
    with open(meta, encoding='utf-8') as f:
      row = json.load(f)
    if row.get('status') == 'success':
      stored.append(row['url'])
  return stored, cost


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--urls', type=int, default=2000)
  parser.add_argument('--bad', type=float, default=0.4)
  parser.add_argument('--img2dataset_python', required=True)
  parser.add_argument('--latency_ms', default='0,0',
                      help='each public answer waits a uniform LO,HI ms (e.g. 100,300)')
  parser.add_argument('--ie_jax_args', default='',
                      help='extra flags for ie-jax\'s CLI, e.g. "--max_per_host 8" (default: none)')
  parser.add_argument('--drip_s', type=float, default=5.0,
                      help='how long a drip stalls after its first 1,000 bytes; above both '
                           'tools\' 10 s read timeout, each meets it as a timeout (at 5 s '
                           'the server ends it, and a Connection: close client sees that)')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  hits = {'n': 0}

  async def secret(request):  # pylint: disable=unused-argument
    hits['n'] += 1
    return web.Response(body=fault_server.JPEG, content_type='image/jpeg')

  internal_app = web.Application()
  internal_app.router.add_get('/secret/{i}', secret)
  server = fault_server.FaultServer(drip_s=args.drip_s)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    # The internal service starts first: the public app needs its address for redirects.
    with fault_server.serve_in_thread(internal_app, host='127.0.0.2') as internal:
      latency = tuple(float(x) for x in args.latency_ms.split(','))
      with fault_server.serve_in_thread(public_app(internal, server, latency)) as public:
        urls, kinds, keys = url_list(public, internal, args.urls, args.bad)
        url_file = os.path.join(tmp, 'urls.txt')
        with open(url_file, 'w', encoding='utf-8') as f:
          f.write('\n'.join(urls) + '\n')
        extra = args.ie_jax_args.split()
        for name, run in ((' '.join(['ie-jax'] + extra),
                           lambda: run_ie_jax(url_file, os.path.join(tmp, 'ie'), extra)),
                          ('img2dataset', lambda: run_img2dataset(
                              args.img2dataset_python, url_file, os.path.join(tmp, 'i2d')))):
          before = hits['n']
          stored, cost = run()
          row = {'downloader': name, **score(stored, urls, kinds, keys, hits['n'] - before),
                 **cost}
          row['good_images_per_s'] = round(row['good_stored_once'] / cost['wall_s'], 1)
          rows.append(row)
  cols = ['good_stored_once', 'good_stored_twice_or_more', 'good_lost', 'bad_stored',
          'ssrf_requests_received', 'wall_s', 'cpu_s', 'peak_rss_mib', 'good_images_per_s']
  print(f'{args.urls} URLs, {int(args.urls * args.bad)} bad, {rows[0]["good"]} good images, '
        f'latency {args.latency_ms} ms')
  print(f'{"":<12} | ' + ' | '.join(cols))
  for row in rows:
    print(f'{row["downloader"]:<12} | ' + ' | '.join(str(row[c]) for c in cols))
  name = 'hostile_vs_img2dataset' + ('' if latency == (0, 0) else
                                     f'_{int(latency[0])}_{int(latency[1])}ms')
  name += '' if args.drip_s == 5.0 else f'_drip{args.drip_s:g}s'
  results_io.write('hostile_vs_img2dataset', name, {'config': vars(args)}, rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
