"""The hostile web at scale (`bench/hostile_web.py`) as a test: 1,000 URLs, 40% bad in every
failure mode the fault server knows, through the real downloader into a real store.

Each run is its own process, so that its peak RSS is the downloader's alone. A second run
with a planted leak (every body kept) shows that the memory bound would catch one.
"""
import json
import os
import subprocess
import sys

from ie_jax.testing.fault_server import EXPECTED_FAULTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Far above the ~10 MB the 1,000-URL run grows by, far below the ~150 MB of good images it
# is served (256 KiB each) that a downloader holding every body would keep.
MAX_RSS_GROWTH_MB = 64


def hostile_web(tmp_path, *flags) -> dict:
  out = tmp_path / 'hostile.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'bench.hostile_web', '--urls=1000', f'--out={out}', *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(out.read_text())['results'][0]


def test_a_hostile_web_gives_every_url_its_reason_in_bounded_memory(tmp_path):
  result = hostile_web(tmp_path)
  assert result['problem_count'] == 0, result['problems']
  # Every good image stored exactly once, every failure mode met and named.
  assert result['stored_images'] == result['distinct_good_images'] == result['counts']['ok']
  wanted = set(EXPECTED_FAULTS.values()) | {'http_429', 'dns_error', 'invalid_url',
                                           'duplicate_url', 'duplicate_sha256', 'test_leak'}
  assert wanted <= set(result['counts']), wanted - set(result['counts'])
  assert sum(result['counts'].values()) == 1000
  assert result['good_bytes_served_mb'] > 2 * MAX_RSS_GROWTH_MB
  assert result['rss_growth_mb'] < MAX_RSS_GROWTH_MB, result


def test_the_memory_bound_catches_a_downloader_that_keeps_every_body(tmp_path):
  result = hostile_web(tmp_path, '--hold_bodies')
  assert result['stored_images'] > 500, result  # it did download the good images
  assert result['rss_growth_mb'] > MAX_RSS_GROWTH_MB, result
