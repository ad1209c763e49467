"""A spent search quota: the API client says so (`api.QuotaExhausted`), and an iteration that
lost too many queries to it stops before any download (`search.QuotaStop`) or, when
configured, waits for the reset and asks again. Loopback server; no timings checked."""
import asyncio
import os

import pytest
from aiohttp import web

from configs import common
from ie_jax.explore import search
from ie_jax.testing.fault_server import serve
from ie_jax.web import api

FAST = api.HttpOptions(retries=2, backoff_s=0.01, max_backoff_s=1.0)


def quota_api():
  calls = {'once': 0}

  async def long_wait(_):
    return web.Response(status=429, headers={'Retry-After': '3600'})

  async def always(_):
    return web.Response(status=429)

  async def broken(_):
    return web.Response(status=500)

  async def once(_):
    calls['once'] += 1
    if calls['once'] == 1:
      return web.Response(status=429)
    return web.json_response({'ok': True})
  app = web.Application()
  for path, handler in (('/long', long_wait), ('/always', always), ('/broken', broken),
                        ('/once', once)):
    app.router.add_get(path, handler)
  return app


def request(path):
  async def go():
    async with serve(quota_api()) as base:
      client = api.JsonClient('fakeapi', FAST)
      async with client.session() as session:
        return await client.request(session, 'GET', base + path)
  return asyncio.run(go())


def test_client_tells_quota_from_other_failures():
  with pytest.raises(api.QuotaExhausted) as e:
    request('/long')
  assert e.value.reset_in_s == 3600 and 'HTTP 429' in str(e.value)
  with pytest.raises(api.QuotaExhausted) as e:
    request('/always')  # 429 on every attempt: a rate limit that does not lift
  assert e.value.reset_in_s is None
  with pytest.raises(api.EngineError, match='giving up after 3 attempts') as e:
    request('/broken')
  assert not isinstance(e.value, api.QuotaExhausted)
  assert request('/once') == {'ok': True}


class QuotaEngine:
  """Refuses the queries in `refuse` (until `recover_after` calls of each), answers others."""
  name = 'fake'

  def __init__(self, refuse, reset_in_s=None, recover_after=None):
    self.refuse, self.reset_in_s, self.recover_after = set(refuse), reset_in_s, recover_after
    self.calls = {}

  async def search(self, query, n):
    self.calls[query] = self.calls.get(query, 0) + 1
    if query in self.refuse and (self.recover_after is None
                                 or self.calls[query] <= self.recover_after):
      raise api.QuotaExhausted(f'fake: HTTP 429 for {query}', self.reset_in_s)
    return [api.Result(url=f'https://example.org/{query}/{i}.jpg', title=query,
                       source='fake', rank=i) for i in range(n)]


def web_config(**changes):
  config = common.get_base_config().web
  config.update(changes)
  return config


QUERIES = [(i, f'query {i}') for i in range(20)]


def test_iteration_that_lost_too_many_queries_stops_before_downloading():
  engine = QuotaEngine({f'query {i}' for i in range(5)}, reset_in_s=1800)
  # store=None: the stop must come before anything touches the store.
  with pytest.raises(search.QuotaStop) as e:
    search.run(3, QUERIES, engine, None, dedup=None, url_cache=None,
                     web_config=web_config(), images_per_query=4)
  message = str(e.value)
  assert 'refused 5 of 20 queries' in message and 'about 30 min' in message
  assert 'wait_for_quota=True' in message and 'Run the same command again' in message


def test_a_few_refusals_are_tolerated():
  engine = QuotaEngine({'query 0', 'query 1'})  # 10%: not more than max_quota_loss
  results, refused = search._search_quota_aware(  # pylint: disable=protected-access
      engine, [q for _, q in QUERIES], 4, web_config())
  assert set(refused) == {'query 0', 'query 1'} and not results['query 0']
  assert not search._over_quota(refused, 20, web_config())  # pylint: disable=protected-access


def test_wait_for_quota_asks_the_refused_queries_again():
  engine = QuotaEngine({f'query {i}' for i in range(10)}, reset_in_s=None, recover_after=2)
  results, refused = search._search_quota_aware(  # pylint: disable=protected-access
      engine, [q for _, q in QUERIES], 4,
      web_config(wait_for_quota=True, quota_wait_s=0.01))
  assert not refused and all(len(results[q]) == 4 for _, q in QUERIES)
  assert engine.calls['query 0'] == 3 and engine.calls['query 15'] == 1


class SpentQuota:
  """Wraps the run's engine: while `spent`, every query not asked before is refused."""

  def __init__(self, engine, gate):
    self.engine, self.name, self.gate, self.asked = engine, engine.name, gate, []
    self.cache = getattr(engine, 'cache', None)

  async def search(self, query, n):
    if self.gate['spent'] and self.cache is not None and self.cache.get(
        self.name, query, n) is None:
      raise api.QuotaExhausted('fake: HTTP 429, Retry-After 60', 60.0)
    self.asked.append(query)
    return await self.engine.search(query, n)


def test_a_run_stops_on_a_spent_quota_and_resumes_after_the_reset(tmp_path, monkeypatch):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from ie_jax import explore  # pylint: disable=g-import-not-at-top
  from ie_jax.explore import setup as explore_setup  # pylint: disable=g-import-not-at-top
  from ie_jax.web import store as store_lib  # pylint: disable=g-import-not-at-top
  gate = {'spent': False, 'engines': []}
  make = explore_setup.make_engine

  def make_engine(config, world, query_cache):
    wrapped = SpentQuota(make(config, world, query_cache), gate)
    gate['engines'].append(wrapped)
    return wrapped
  monkeypatch.setattr(explore_setup, 'make_engine', make_engine)
  config = tiny.get_config()
  config.explore.iterations = 1
  workdir = str(tmp_path / 'run')
  explore.run(config, workdir)  # iteration 0, quota fine
  config.explore.iterations = 2
  gate['spent'] = True
  with pytest.raises(search.QuotaStop, match='resets in about 1 min'):
    explore.run(config, workdir)
  store = store_lib.WebStore(os.path.join(workdir, 'web'))
  assert store.iterations() == [0]  # nothing of iteration 1 downloaded
  gate['spent'] = False  # the reset
  done = explore.run(config, workdir)
  assert (done.state.iteration, done.state.phase) == (2, 'sample')
  assert store_lib.WebStore(os.path.join(workdir, 'web')).iterations() == [0, 1]
  assert len(done.state.history) == 2
