"""No URL can stop a run: host names the IDNA codec rejects, redirects to them, and any
exception inside one job each become that job's record, through the real resolver.

Before this, `http://bad..host.invalid/` raised UnicodeError inside name resolution; it
escaped `fetch`, cancelled every pending job and killed the search phase, and a resumed run
met the same URL again.
"""
import asyncio
import os
import subprocess
import sys
import textwrap
import urllib.parse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ie_jax.testing.fault_server import (FETCH, GOOD, LIMITS, FaultServer, serve,
                                         serve_in_thread)
from ie_jax.web import download, fetch, records

OPTIONS = download.DownloadOptions(fetch=FETCH, image=LIMITS, decode_processes=0,
                                   decode_workers=2, progress=False)
INVALID_HOSTS = [
    'bad..host.invalid',            # an empty label
    'a' * 70 + '.invalid',          # a label over 63 characters
    'xn--.invalid',                 # a punycode label with nothing in it
    '.invalid',                     # a leading empty label
    '.'.join(['abcdefghi'] * 26),   # 259 characters: over DNS's 253
]


def run_jobs(jobs_of, options=OPTIONS):
  """Serves a FaultServer, runs `jobs_of(base)` through a Downloader with the system's own
  resolver (no fake table); returns (base, {url: record})."""
  async def go():
    async with serve(FaultServer().app()) as base:
      downloader = download.Downloader(options)
      got = []
      await downloader.run(jobs_of(base), got.append)
      return base, {r.url: r for r in got}
  return asyncio.run(go())


def test_invalid_host_names_and_redirects_to_them_are_invalid_url():
  def jobs_of(base):
    urls = [f'http://{host}/a.jpg' for host in INVALID_HOSTS]
    urls += [f'{base}/redirect?to=' + urllib.parse.quote(f'http://{host}/a.jpg')
             for host in INVALID_HOSTS]
    urls += [f'{base}/img/{name}' for name in ('a.jpg', 'b.png', 'c.webp')]
    return [records.Job(u, 'q', 'c') for u in urls]

  base, got = run_jobs(jobs_of)
  assert len(got) == 2 * len(INVALID_HOSTS) + 3
  for host in INVALID_HOSTS:
    direct = got[f'http://{host}/a.jpg']
    assert direct.status == 'invalid_url', (host, direct.detail)
    hop = got[f'{base}/redirect?to=' + urllib.parse.quote(f'http://{host}/a.jpg')]
    assert hop.status == 'invalid_url', (host, hop.detail)
  for name in ('a.jpg', 'b.png', 'c.webp'):
    assert got[f'{base}/img/{name}'].status == 'ok'


def test_an_exception_inside_one_job_is_that_jobs_record(monkeypatch, caplog):
  real = fetch.Fetcher.fetch

  async def fetch_or_fail(self, url):
    if url.endswith('/b.png'):
      raise KeyError('a bug met on one URL')
    return await real(self, url)
  monkeypatch.setattr(fetch.Fetcher, 'fetch', fetch_or_fail)
  base, got = run_jobs(lambda base: [records.Job(f'{base}/img/{name}', 'q', 'c')
                                     for name in GOOD if name != 'after-429.jpg'])
  bad = got[f'{base}/img/b.png']
  assert bad.status == 'internal_error' and bad.detail.startswith('KeyError')
  assert records.is_reason('internal_error') and records.is_transient('internal_error')
  others = [r for url, r in got.items() if not url.endswith('/b.png')]
  assert len(others) == len(GOOD) - 2 and all(r.status == 'ok' for r in others)
  assert 'Internal error on' in caplog.text  # logged loudly, with the traceback


_LABEL = st.one_of(
    st.text(alphabet='abcxyz019-', min_size=0, max_size=70),
    st.sampled_from(['xn--', 'xn--zz', 'xn--80ak6aa92e', '-', '']),
    st.text(min_size=1, max_size=8))  # any Unicode, IDNA-encodable or not


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(labels=st.lists(_LABEL, min_size=1, max_size=5), port=st.integers(0, 70000),
       path=st.text(max_size=30), query=st.text(max_size=30), loopback=st.booleans())
def test_fuzzed_urls_through_the_real_fetch_give_a_record_never_an_exception(
    labels, port, path, query, loopback):
  """Host, port, path and query from anywhere; the host under .invalid (RFC 6761: never
  resolves, so the real resolver answers at once) or loopback's literal address."""
  host = '127.0.0.1' if loopback else '.'.join(labels + ['invalid'])
  url = f'http://{host}:{port}/{path}?{query}'
  options = fetch.FetchOptions(retries=0, total_timeout_s=5.0, connect_timeout_s=1.0,
                               allow_networks=('127.0.0.1/32',))

  async def go():
    async with fetch.new_session(options) as session:
      try:
        await fetch.Fetcher(session, options).fetch(url)
      except records.Rejected as e:
        return e.reason
    return 'ok'
  reason = asyncio.run(go())
  assert reason == 'ok' or records.is_reason(reason), (url, reason)


_PHASE = textwrap.dedent('''
    import asyncio, json, sys
    from configs import common
    from ie_jax.explore import search
    from ie_jax.web import api, dedup as dedup_lib, shards

    class Engine:
      def __init__(self, urls):
        self.urls = urls
      async def search(self, query, n):
        return [api.Result(u, query, 'test', i) for i, u in enumerate(self.urls)][:n]

    workdir, urls = sys.argv[1], json.loads(sys.argv[2])
    web = common.get_base_config().web
    web.allow_networks, web.part_size, web.min_side, web.max_side = '127.0.0.1/32', 2, 32, 64
    counts = search.run(0, [(0, 'q')], Engine(urls), shards.ShardedStore(workdir, 0, 1),
                              dedup=dedup_lib.DedupIndex(), url_cache=dedup_lib.UrlCache(),
                              web_config=web, images_per_query=len(urls))
    print(json.dumps(counts))
''')


def test_a_search_phase_killed_mid_way_resumes_past_invalid_hosts(tmp_path):
  """Killed after its first committed part, then resumed: no crash loop, every URL once."""
  import json  # pylint: disable=import-outside-toplevel

  with serve_in_thread(FaultServer().app()) as base:
    urls = [f'{base}/img/{name}' for name in ('a.jpg', 'b.png', 'c.webp', 'd.gif')]
    urls[1:1] = [f'http://{host}/x.jpg' for host in INVALID_HOSTS[:3]]
    urls.append(f'{base}/redirect?to=' + urllib.parse.quote('http://bad..host.invalid/y.jpg'))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, 'PYTHONPATH': root, 'JAX_PLATFORMS': 'cpu'}
    args = [sys.executable, '-c', _PHASE, str(tmp_path), json.dumps(urls)]
    killed = subprocess.run(args, env={**env, 'IE_JAX_FAILPOINT': 'search'}, cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]  # the failpoint, not a crash
    resumed = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
  from ie_jax.web import store as store_lib  # pylint: disable=import-outside-toplevel
  rows = store_lib.WebStore(str(tmp_path / 'web')).manifest(0)
  assert sorted(r['url'] for r in rows) == sorted(urls)  # every URL recorded exactly once
  status = {r['url']: r['status'] for r in rows}
  assert [status[u] for u in urls if 'invalid' in u] == ['invalid_url'] * 4
  assert sum(s == 'ok' for s in status.values()) == 4
