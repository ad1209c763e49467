r"""A hostile web at scale: thousands of URLs, 40% of them bad in every way the fault server
knows, through the real downloader into a real store, with peak memory measured.

  python -m bench.hostile_web --urls=5000      # prints a table, writes bench/results/hostile_web.json

A server process serves the URLs on 127.0.0.1 under 8 host names (a fixed DNS table maps
them, the names of private services and the unresolvable ones). Good images are distinct
160x120 JPEGs padded to 256 KiB each, so that a downloader holding every body would grow
by hundreds of MB. The bad ones are spread evenly over: every fault of
`ie_jax.testing.fault_server.EXPECTED_FAULTS` (404, 500, reset, slow drip, truncated, wrong
content type, HTML, SVG, 0 bytes, decompression bombs, over the byte cap, redirect loops,
redirects to private addresses and to file://, tiny, opted out), a host answering 429 with
Retry-After, names that resolve to 10/8, unresolvable names, invalid URLs, host names the
IDNA codec rejects and redirects to them (they crashed the downloader before #22), repeated URLs,
byte-identical copies under other URLs, and near-copies of the target's test images.

The downloader runs in this process, with the store as its sink; the server and the DNS
table are the only fakes. Checked: every job has exactly one record, every good image is
stored exactly once, every bad URL carries its expected reason. Peak RSS is this process's
`ru_maxrss`, and its growth over the level just before the download starts.
"""
import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import random
import resource
import sys
import tempfile
import time
import urllib.parse

from ie_jax.testing import fault_server
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import download
from ie_jax.web import fetch as fetch_lib
from ie_jax.web import records
from ie_jax.web import store as store_lib

HOSTS = [f'host{i}.test' for i in range(8)]
PAD = 256 * 1024  # trailing bytes after a good JPEG's end marker: decoders ignore them
TEST_SEEDS = range(900_000, 900_020)  # the target's test images
# A read timeout well above what a loaded 2-core machine needs for a good image (the unit
# tests' 0.3 s timed out good images while other jobs shared the cores), yet short enough
# that the slow drips, which stall for `DRIP_S`, hold their connections only briefly.
FETCH = dataclasses.replace(fault_server.FETCH, concurrency=32, retries=1, max_backoff_s=0.5,
                            read_timeout_s=3.0, total_timeout_s=30.0)
DRIP_S = 6.0
OPTIONS = download.DownloadOptions(fetch=FETCH, image=fault_server.LIMITS, decode_workers=2,
                                   progress=False)
# Kinds of bad URL beyond the fault server's own faults, with the reason each must get.
EXTRA_BAD = {'rate-limited': 'http_429', 'dns-private': 'ssrf_blocked',
             'unresolvable': 'dns_error', 'invalid-url': 'invalid_url',
             # Host names the IDNA codec rejects (issue #22), given or redirected to.
             'invalid-host': 'invalid_url', 'redirect-to-invalid-host': 'invalid_url',
             'repeated-url': 'duplicate_url', 'copied-bytes': 'duplicate_sha256',
             'test-leak': 'test_leak'}
BAD_KINDS = sorted(set(fault_server.EXPECTED_FAULTS) | set(EXTRA_BAD))


class HostileServer(fault_server.FaultServer):
  """The fault server plus distinct padded images, near-copies of test images and a
  rate-limited endpoint."""

  def __init__(self):
    super().__init__(drip_s=DRIP_S)
    self._good = {}

  def app(self):
    app = super().app()
    app.router.add_get('/good/{seed}', self.good)
    app.router.add_get('/leak/{seed}', self.leak)
    app.router.add_get('/limited/{i}', self.limited)
    return app

  async def good(self, request):
    seed = int(request.match_info['seed'])
    if seed not in self._good:
      self._good[seed] = fault_server.encode(fault_server.picture(seed, (160, 120)), 'JPEG')
    return _image(self._good[seed] + bytes(PAD))

  async def leak(self, request):  # smaller and recompressed: a copy found on the web
    image = fault_server.picture(int(request.match_info['seed']), (150, 112))
    return _image(fault_server.encode(image, 'JPEG', quality=70))

  async def limited(self, request):
    del request
    from aiohttp import web  # pylint: disable=g-import-not-at-top
    return web.Response(status=429, headers={'Retry-After': '3600'})


def _image(body: bytes):
  from aiohttp import web  # pylint: disable=g-import-not-at-top
  return web.Response(body=body, content_type='image/jpeg')


def _serve(port_queue) -> None:
  # The faults make aiohttp's server log a traceback per aborted client read: not news here.
  logging.getLogger('aiohttp').setLevel(logging.CRITICAL)

  async def main():
    async with fault_server.serve(HostileServer().app()) as base:
      port_queue.put(int(base.rsplit(':', 1)[1]))
      await asyncio.Event().wait()
  asyncio.run(main())


@dataclasses.dataclass
class Plan:
  """The URLs in job order, and what each must end as."""
  urls: list[str]
  expected: list[str]           # the status of each job ('ok' for the first of a good image)
  kinds: list[str]              # 'good' or a bad kind
  groups: dict                  # good seed -> positions of its URLs (repeats and copies)


def make_plan(count: int, port: int, bad_fraction: float = 0.4, seed: int = 0) -> Plan:
  """`count` jobs, `bad_fraction` of them bad, spread evenly over `BAD_KINDS`, shuffled."""
  rng = random.Random(seed)
  n_bad = round(count * bad_fraction)
  kinds = ['good'] * (count - n_bad) + [BAD_KINDS[i % len(BAD_KINDS)] for i in range(n_bad)]
  rng.shuffle(kinds)
  # Repeats and copies need an earlier good image to repeat: move them after the first good.
  first_good = kinds.index('good')
  for i in range(first_good):
    if kinds[i] in ('repeated-url', 'copied-bytes'):
      kinds[i], kinds[first_good] = kinds[first_good], kinds[i]
      first_good = i
  urls, expected, groups, seeds = [], [], collections.defaultdict(list), []
  for i, kind in enumerate(kinds):
    host = f'http://{HOSTS[i % len(HOSTS)]}:{port}'
    if kind == 'good':
      seeds.append(i)
      url, status = f'{host}/good/{i}', 'ok'
      groups[i].append(i)
    elif kind == 'repeated-url':
      earlier = rng.choice(seeds)
      url, status = urls[groups[earlier][0]], 'duplicate_url'
      groups[earlier].append(i)
    elif kind == 'copied-bytes':
      earlier = rng.choice(seeds)
      url, status = f'{host}/good/{earlier}?copy={i}', 'duplicate_sha256'
      groups[earlier].append(i)
    elif kind == 'test-leak':
      url, status = f'{host}/leak/{TEST_SEEDS[i % len(TEST_SEEDS)]}?i={i}', 'test_leak'
    elif kind == 'rate-limited':
      url, status = f'http://ratelimited.test:{port}/limited/{i}', 'http_429'
    elif kind == 'dns-private':
      url, status = f'http://intranet{i}.test:{port}/good/{i}', 'ssrf_blocked'
    elif kind == 'unresolvable':
      url, status = f'http://gone{i}.invalid/{i}.jpg', 'dns_error'
    elif kind in ('invalid-host', 'redirect-to-invalid-host'):
      bad = rng.choice([f'bad..host{i}.invalid', 'a' * 70 + f'{i}.invalid', 'xn--.invalid',
                        f'.lead{i}.invalid'])
      url, status = f'http://{bad}/{i}.jpg', 'invalid_url'
      if kind == 'redirect-to-invalid-host':
        url = f'{host}/redirect?to=' + urllib.parse.quote(url, safe='')
    elif kind == 'invalid-url':
      url = rng.choice([f'http://[::1/{i}.jpg', f'ftp://files.test/{i}.jpg',
                        f'javascript:alert({i})', f'not a url {i}', f'http:///{i}.jpg'])
      status = 'invalid_url'
    else:
      url, status = f'{host}/fault/{kind}?i={i}', fault_server.EXPECTED_FAULTS[kind]
    urls.append(url)
    expected.append(status)
  return Plan(urls, expected, kinds, dict(groups))


def dns_table(plan: Plan) -> dict:
  table = {host: ['127.0.0.1'] for host in HOSTS + ['ratelimited.test']}
  for url, kind in zip(plan.urls, plan.kinds):
    if kind == 'dns-private':
      host = url.split('/')[2].split(':')[0]
      table[host] = [f'10.{len(table) % 250}.0.1']
  return table


def _status_mb(field: str) -> float | None:
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  return None


def reset_peak_rss() -> float:
  """Restarts the peak-RSS mark at the current RSS (Linux); returns the current RSS in MB.

  Without the reset, a peak reached before the download (imports, planning) would hide the
  download's own growth: `ru_maxrss` only ever rises.
  """
  try:
    with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
      f.write('5')  # resets VmHWM to VmRSS
  except OSError:
    pass
  current = _status_mb('VmRSS')
  return current if current is not None else max_rss_mb()


def max_rss_mb() -> float:
  peak = _status_mb('VmHWM')
  if peak is not None:
    return peak
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def holding_bodies():
  """Makes the fetcher keep every body it returns: the leak the RSS bound must catch."""
  held, original = [], fetch_lib.Fetcher.fetch

  async def fetch(self, url):
    body = await original(self, url)
    held.append(body)
    return body
  fetch_lib.Fetcher.fetch = fetch
  try:
    yield held
  finally:
    fetch_lib.Fetcher.fetch = original


def run(count: int, bad_fraction: float = 0.4, seed: int = 0, hold_bodies: bool = False) -> dict:
  """Runs the hostile web once; returns the measurements and every problem found.

  `hold_bodies` plants a leak (every fetched body kept) to show that the RSS bound sees it.
  """
  context = multiprocessing.get_context('fork' if sys.platform == 'linux' else 'spawn')
  ports = context.Queue()
  server = context.Process(target=_serve, args=(ports,), daemon=True)
  server.start()
  try:
    port = ports.get(timeout=30)
    plan = make_plan(count, port, bad_fraction, seed)
    dedup = dedup_lib.DedupIndex()
    for test_seed in TEST_SEEDS:
      dedup.forbid_image(fault_server.encode(fault_server.picture(test_seed, (160, 120)), 'PNG'),
                         fault_server.LIMITS)
    with tempfile.TemporaryDirectory() as root:
      store = store_lib.WebStore(root)
      got = collections.defaultdict(list)  # url -> statuses, in completion order
      writer = {'part': None, 'rows': 0}

      def sink(record: records.Record) -> None:
        got[record.url].append(record.status)
        if writer['part'] is None:
          writer['part'] = store.writer(0)
        if record.status == records.OK:
          writer['part'].add(record.jpeg, record.manifest_row())
        else:
          writer['part'].add_failure(record.manifest_row())
        writer['rows'] += 1
        if writer['rows'] % 500 == 0:
          writer['part'].commit()
          writer['part'] = None

      baseline = reset_peak_rss()
      start = time.perf_counter()
      downloader = download.Downloader(OPTIONS, dedup,
                                       resolver=fault_server.FixedResolver(dns_table(plan)))
      with holding_bodies() if hold_bodies else contextlib.nullcontext():
        counts = asyncio.run(downloader.run([records.Job(u) for u in plan.urls], sink))
      seconds = time.perf_counter() - start
      if writer['part'] is not None:
        writer['part'].commit()
      peak = max_rss_mb()
      rows = store.manifest(0)
      stored = store.num_images(0)
      problems = check(plan, got, rows, stored)
  finally:
    server.kill()
    server.join()
  table = collections.Counter()
  for status, kind in zip(plan.expected, plan.kinds):
    table[(kind, status)] += 1
  return {
      'urls': count, 'bad_fraction': bad_fraction, 'seed': seed, 'hold_bodies': hold_bodies,
      'seconds': round(seconds, 2),
      'baseline_rss_mb': round(baseline, 1), 'peak_rss_mb': round(peak, 1),
      'rss_growth_mb': round(peak - baseline, 1),
      'good_bytes_served_mb': round(plan.kinds.count('good') * (PAD + 6000) / 2**20, 1),
      'stored_images': stored, 'distinct_good_images': len(plan.groups),
      'counts': dict(sorted(counts.items())),
      'expected_counts': dict(sorted(collections.Counter(plan.expected).items())),
      'by_kind': [{'kind': k, 'expected': s, 'urls': n} for (k, s), n in sorted(table.items())],
      'problems': problems[:50], 'problem_count': len(problems),
      'max_in_flight': FETCH.concurrency, 'read_timeout_s': FETCH.read_timeout_s,
  }


def check(plan: Plan, got: dict, rows: list, stored: int) -> list[str]:
  """Every way the run differs from the plan, as readable lines (empty: all as expected)."""
  problems = []
  wanted = collections.defaultdict(list)
  for url, status in zip(plan.urls, plan.expected):
    wanted[url].append(status)
  for url, statuses in wanted.items():
    if len(got.get(url, [])) != len(statuses):
      problems.append(f'{url}: {len(statuses)} jobs, {len(got.get(url, []))} records')
  # Repeats and copies of one image: exactly one is kept, whichever finished first.
  for seed, positions in plan.groups.items():
    statuses = [s for url in dict.fromkeys(plan.urls[p] for p in positions) for s in got[url]]
    if statuses.count('ok') != 1 or not set(statuses) <= {'ok', 'duplicate_url',
                                                          'duplicate_sha256'}:
      problems.append(f'good image {seed}: {sorted(statuses)}')
  grouped = {plan.urls[p] for positions in plan.groups.values() for p in positions}
  for url, statuses in wanted.items():
    if url not in grouped and sorted(got.get(url, [])) != sorted(statuses):
      problems.append(f'{url}: expected {statuses}, got {got.get(url)}')
  kept = [r for r in rows if r['status'] == 'ok']
  if len(rows) != len(plan.urls):
    problems.append(f'{len(rows)} manifest rows for {len(plan.urls)} jobs')
  if stored != len(kept) or stored != len(plan.groups):
    problems.append(f'{stored} images stored, {len(kept)} ok rows, '
                    f'{len(plan.groups)} distinct good images')
  if len({r['sha256'] for r in kept}) != len(kept):
    problems.append('an image was stored twice')
  if any(not records.is_reason(r['status']) for r in rows if r['status'] != 'ok'):
    problems.append('a failure without a known reason')
  return problems


def print_table(result: dict) -> None:
  print(f"{result['urls']} URLs ({result['bad_fraction']:.0%} bad) in {result['seconds']} s; "
        f"peak RSS {result['peak_rss_mb']} MB (+{result['rss_growth_mb']} MB over "
        f"{result['baseline_rss_mb']} MB before the download; "
        f"{result['good_bytes_served_mb']} MB of good images served)")
  print(f"{'status':<22}{'records':>8}{'planned':>9}")
  for status, n in sorted(result['counts'].items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"{status:<22}{n:>8}{result['expected_counts'].get(status, 0):>9}")
  print(f"stored {result['stored_images']} images = {result['distinct_good_images']} distinct "
        f"good images; problems: {result['problem_count']}")
  for line in result['problems'][:10]:
    print('  ' + line)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.hostile_web', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--urls', type=int, default=5000)
  parser.add_argument('--bad_fraction', type=float, default=0.4)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--hold_bodies', action='store_true',
                      help='plant a leak (keep every body) to see the RSS growth it causes')
  parser.add_argument('--out', default='', help='JSON path (default bench/results/'
                      'hostile_web.json; "-" for none)')
  args = parser.parse_args(argv)
  result = run(args.urls, args.bad_fraction, args.seed, args.hold_bodies)
  print_table(result)
  if args.out != '-':
    from bench import results_io  # pylint: disable=g-import-not-at-top
    results_io.write('hostile_web', 'hostile_web', {'settings': {
        'urls': args.urls, 'bad_fraction': args.bad_fraction, 'seed': args.seed,
        'hold_bodies': args.hold_bodies}}, [result],
        args.out)
  return 1 if result['problem_count'] else 0


if __name__ == '__main__':
  sys.exit(main())
