"""Open file descriptors (files and sockets) stay bounded as a run goes on (issue #9)."""
import asyncio
import os

from configs import tiny
from ie_jax import explore, report
from ie_jax.testing.fault_server import EXPECTED_FAULTS, FETCH, GOOD, LIMITS, FaultServer, serve
from ie_jax.web import download, records
from ie_jax.web import store as store_lib


def open_fds(exclude: str = '') -> list[str]:
  """What this process's descriptors point at (paths, 'socket:[..]', 'pipe:[..]')."""
  found = []
  for fd in os.listdir('/proc/self/fd'):
    try:
      target = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:  # the descriptor listdir itself used, now closed
      continue
    if not exclude or exclude not in target:
      found.append(target)
  return sorted(found)


def test_store_readers_are_bounded_and_reopen_on_demand(tmp_path):
  store = store_lib.WebStore(str(tmp_path), max_open_parts=8)
  for it in range(40):
    for part in range(2):
      with store.writer(it) as writer:
        writer.add(f'{it}-{part}'.encode(), {'url': f'u{it}-{part}'})
  before = len(open_fds())
  for _ in range(2):  # as replay does: every iteration, again and again
    for it in range(40):
      assert store.read(it, 1) == f'{it}-1'.encode()
      assert store.open_parts() <= 8
  assert len(open_fds()) - before <= 8
  assert store.read(0, 0) == b'0-0'  # evicted long ago: reopened
  with store.writer(0) as writer:  # a new part: the iteration's readers are reopened
    writer.add(b'0-2', {'url': 'u0-2'})
  assert store.num_images(0) == 3 and store.read(0, 2) == b'0-2'
  store.close()
  assert store.open_parts() == 0 and len(open_fds()) <= before


def test_descriptors_do_not_grow_over_iterations(tmp_path, monkeypatch):
  config = tiny.get_config('iterations=4,examples=32')
  config.monitor.knn_examples = 0
  counts = []
  real_build = report.build

  def count_after_each_iteration(*args, **kwargs):
    real_build(*args, **kwargs)
    # Store parts are bounded by WebStore's cap (tested above); everything else must not
    # grow at all from one iteration to the next.
    counts.append(open_fds(exclude='.array_record'))

  monkeypatch.setattr(report, 'build', count_after_each_iteration)
  before = open_fds()
  explore.run(config, str(tmp_path))
  assert len(counts) == 4
  print('descriptors after each iteration:', [len(c) for c in counts])
  for later in counts[2:]:  # the first iterations open the lazily created logs and pools
    assert len(later) <= len(counts[1]), sorted(set(later) - set(counts[1]))
  leftover = sorted(set(open_fds()) - set(before))
  assert not [t for t in leftover if str(tmp_path) in t], leftover  # closed at the end


def test_sockets_do_not_grow_over_twenty_download_phases():
  """20 download phases (good images, 404s, 500s, resets, redirects) against a loopback
  server: every socket and file they open is closed when the phase ends."""
  options = download.DownloadOptions(fetch=FETCH, image=LIMITS, decode_workers=2,
                                     progress=False)
  server = FaultServer()

  async def phase():
    async with serve(server.app()) as base:
      jobs = [records.Job(f'{base}/img/{name}', 'q', 'c') for name in GOOD]
      jobs += [records.Job(f'{base}/fault/{name}', 'q', 'c') for name in EXPECTED_FAULTS]
      got = []
      await download.Downloader(options).run(jobs, got.append)
      assert len(got) == len(jobs)

  counts = []
  for _ in range(20):
    asyncio.run(phase())
    counts.append(open_fds())
  print('descriptors after each phase:', [len(c) for c in counts])
  for later in counts[1:]:  # the first phase may start lazily created pools
    assert len(later) <= len(counts[0]), sorted(set(later) - set(counts[0]))
  assert not [t for t in counts[-1] if t.startswith('socket:')
              and t not in counts[0]], counts[-1]
