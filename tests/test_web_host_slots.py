"""Slow URLs do not starve their host: a request far slower than the host's typical one
gives its slot back (`web/host_slots.py`), within a bound on open connections, and never on
a host that asked for few. Checked by the order records arrive in, not by timings."""
import asyncio
import dataclasses

from aiohttp import web

from ie_jax.testing.fault_server import FETCH, LIMITS, serve
from ie_jax.web import download, host_slots


def app(state):
  async def handle(request):
    state['open'] += 1
    state['max_open'] = max(state['max_open'], state['open'])
    try:
      kind = request.match_info['kind']
      await asyncio.sleep(2.5 if kind == 'stall' else 0.02)
      return web.Response(body=state['jpeg'], content_type='image/jpeg')
    finally:
      state['open'] -= 1
  application = web.Application()
  application.router.add_get('/{kind}/{i}', handle)
  return application


def order_of_arrival(stalls=2, fast=12, **fetch_changes):
  """Stalling URLs first, then fast ones, on one host with 2 slots; returns the
  URL kinds in the order their records arrived, and the most connections open at once."""
  from ie_jax.testing import fault_server  # pylint: disable=g-import-not-at-top
  state = {'open': 0, 'max_open': 0, 'jpeg': fault_server.GOOD['a.jpg'][0]}
  options = download.DownloadOptions(
      fetch=dataclasses.replace(FETCH, per_host=2, total_timeout_s=10.0, read_timeout_s=5.0,
                                slow_min_s=0.3, **fetch_changes),
      image=LIMITS, decode_processes=0, decode_workers=2, progress=False)

  async def go():
    async with serve(app(state)) as base:
      jobs = [download.Job(f'{base}/stall/{i}') for i in range(stalls)]
      jobs += [download.Job(f'{base}/fast/{i}') for i in range(fast)]
      got = []
      await download.Downloader(options).run(jobs, got.append)
      return got
  got = asyncio.run(go())
  assert [r.status for r in got].count('ok') == 1  # one image: the rest are its duplicates
  return [r.url.rsplit('/', 2)[1] for r in got], state['max_open']


def test_stalled_requests_give_their_slots_back():
  kinds, max_open = order_of_arrival()
  assert kinds[-2:] == ['stall', 'stall']  # every fast URL went past them
  assert max_open <= 2 * 4  # per_host x slow_factor


def test_open_connections_stay_bounded():
  _, max_open = order_of_arrival(stalls=12, fast=0)
  assert max_open == 2 * 4  # slots given back, but never more than per_host x slow_factor


def test_without_release_fast_urls_wait_behind_stalls():
  kinds, _ = order_of_arrival(slow_factor=0)
  assert kinds[:2] == ['stall', 'stall']


def test_strict_host_never_gives_slots_back():
  kinds, max_open = order_of_arrival(host_limits=(('127.0.0.1', 2),))
  assert kinds[:2] == ['stall', 'stall']
  assert max_open <= 2


def test_threshold_follows_the_host_median():
  async def go():
    slots = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=0.05, strict=False)
    assert slots.threshold_s() == 0.05  # too little history: the floor
    for _ in range(5):
      async with slots.slot():
        await asyncio.sleep(0.03)
    return slots.threshold_s()
  assert asyncio.run(go()) >= 4 * 0.03


class _Failure(Exception):
  def __init__(self, reason):
    super().__init__(reason)
    self.reason = reason


def _finish(slots, n, error=None):
  """`n` requests through `slots`, one after another, each ending with `error` or not."""
  async def go():
    for _ in range(n):
      try:
        async with slots.slot():
          if error is not None:
            raise error
      except _Failure:
        pass
  asyncio.run(go())


def test_a_host_that_answers_in_time_gets_more_slots_up_to_the_cap():
  slots = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=1.0, strict=False, max_limit=9)
  _finish(slots, 3)  # slow start: a slot per timely answer
  assert slots.limit == 5
  _finish(slots, 1, _Failure('http_503'))  # halved, and from now on +1 / limit
  assert slots.limit == 2.5
  _finish(slots, 2)  # +1/2.5 +1/2.9
  assert 2.5 < slots.limit < 4
  _finish(slots, 200)
  assert slots.limit == 9  # the cap
  fixed = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=1.0, strict=False)
  _finish(fixed, 50)
  assert fixed.limit == 2  # no cap given: the limit is fixed


def test_overload_halves_the_limit_and_other_failures_do_not():
  slots = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=1.0, strict=False, max_limit=32)
  _finish(slots, 30)  # slow start
  assert slots.limit == 32
  _finish(slots, 1, _Failure('http_404'))  # says nothing about load
  assert slots.limit == 32
  for reason, expect in (('http_429', 16), ('http_503', 8), ('http_429', 4),
                         ('http_429', 2), ('http_429', 1), ('http_429', 1)):
    _finish(slots, 1, _Failure(reason))
    assert slots.limit == expect, reason


def test_a_few_stalled_or_reset_urls_do_not_halve_a_host_but_many_do():
  slots = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=1.0, strict=False, max_limit=32)
  _finish(slots, 30)
  assert slots.limit == 32
  for _ in range(5):  # bad URLs among good ones: each a fault of its own URL
    _finish(slots, 1, _Failure('timeout'))
    _finish(slots, 1, _Failure('connection_error'))
    _finish(slots, 3)
  assert slots.limit == 32
  _finish(slots, 16)
  _finish(slots, 7, _Failure('timeout'))  # 7 of the last 16
  assert slots.limit == 32
  _finish(slots, 1, _Failure('timeout'))  # 8 of 16: the host itself is failing
  assert slots.limit == 16
  _finish(slots, 7, _Failure('connection_error'))  # the window starts again after a halving
  assert slots.limit == 16
  _finish(slots, 1, _Failure('connection_error'))
  assert slots.limit == 8


def _together(slots, n, reason):
  """`n` requests open at once through `slots`, all failing with `reason` together."""
  async def go():
    gate = asyncio.Event()

    async def one():
      try:
        async with slots.slot():
          await gate.wait()
          raise _Failure(reason)
      except _Failure:
        pass
    tasks = [asyncio.create_task(one()) for _ in range(n)]
    while slots.most_open < n:
      await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
  asyncio.run(go())


def test_one_burst_of_failures_halves_a_host_once():
  # Requests open together that fail together met one load; TCP halves once per window.
  for reason in ('timeout', 'http_429'):
    slots = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=1.0, strict=False,
                                 max_limit=32)
    _finish(slots, 30)
    assert slots.limit == 32
    _together(slots, 31, reason)
    assert slots.limit == 16, reason
    # Requests started after the halving count again.
    _finish(slots, 8, _Failure(reason))
    assert slots.limit < 16, reason


def test_strict_hosts_keep_their_limit():
  slots = host_slots.HostSlots(2, slow_factor=4.0, slow_min_s=1.0, strict=True, max_limit=32)
  _finish(slots, 100)
  assert slots.limit == 2


def fast_host_concurrency(**fetch_changes) -> int:
  """The most requests one fast host saw at once over 120 URLs, with per_host=2."""
  from ie_jax.testing import fault_server  # pylint: disable=g-import-not-at-top
  state = {'open': 0, 'max_open': 0, 'jpeg': fault_server.GOOD['a.jpg'][0]}
  options = download.DownloadOptions(
      fetch=dataclasses.replace(FETCH, per_host=2, slow_factor=0.0, **fetch_changes),
      image=LIMITS, decode_processes=0, decode_workers=2, progress=False)

  async def go():
    async with serve(app(state)) as base:
      jobs = [download.Job(f'{base}/fast/{i}') for i in range(120)]
      await download.Downloader(options).run(jobs, lambda record: None)
  asyncio.run(go())
  return state['max_open']


def test_the_downloader_opens_more_connections_to_a_host_that_keeps_up():
  assert fast_host_concurrency(max_per_host=2) <= 2
  grown = fast_host_concurrency(max_per_host=8)
  assert 2 < grown <= 8
