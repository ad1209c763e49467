"""Search engines: the protocol, the backends by name, and a query cache.

  engine = engines.make('openverse', base_url=...)   # keys come from the environment
  results = await engines.CachedEngine(engine, cache).search('pembroke welsh corgi', 100)

Every backend pages until it has n results or the API runs out, trims to n, ranks from 0,
and raises `EngineError` (with secrets redacted) when the API fails or answers nonsense;
single malformed items are skipped with a logged warning.
"""
import copy
from typing import Protocol

from ie_jax.web.api import EngineError, MissingKeyError, Result
from ie_jax.web.clip_retrieval import ClipRetrieval
from ie_jax.web.flickr import Flickr
from ie_jax.web.google_cse import GoogleCustomSearch
from ie_jax.web.local import LocalEngine
from ie_jax.web.openverse import Openverse
from ie_jax.web.url_corpus import UrlCorpusEngine
from ie_jax.web.wikimedia import WikimediaCommons


class SearchEngine(Protocol):
  name: str

  async def search(self, query: str, n: int) -> list[Result]:
    """Up to n results for `query`, best first."""


ENGINES = {
    'local': LocalEngine,
    'openverse': Openverse,
    'flickr': Flickr,
    'wikimedia': WikimediaCommons,
    'clip_retrieval': ClipRetrieval,
    'google': GoogleCustomSearch,
    'url_corpus': UrlCorpusEngine,
}


def make(name: str, **kwargs) -> SearchEngine:
  """The engine `name` built with `kwargs` (see each class for its arguments)."""
  if name not in ENGINES:
    raise KeyError(f'Unknown search engine {name!r}; valid engines: {sorted(ENGINES)}.')
  return ENGINES[name](**kwargs)


class QueryCache:
  """(engine, query) -> its results, so a query repeated in a later iteration costs no call.

  A cached answer serves any n up to the number stored, and every n when the engine gave
  fewer than it was asked for (it had no more).
  """

  def __init__(self):
    self._entries: dict[str, dict] = {}

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, engine: str, query: str, n: int) -> list[Result] | None:
    entry = self._entries.get(_key(engine, query))
    if entry is None or (len(entry['results']) < n and not entry['exhausted']):
      return None
    return [Result(*row) for row in entry['results'][:n]]

  def put(self, engine: str, query: str, n: int, results: list[Result]) -> None:
    self._entries[_key(engine, query)] = {
        'engine': engine, 'query': query, 'exhausted': len(results) < n,
        'results': [[r.url, r.title, r.source, r.rank] for r in results]}

  def state(self) -> dict:
    return {'version': 1, 'entries': list(copy.deepcopy(self._entries).values())}

  @classmethod
  def from_state(cls, state: dict) -> 'QueryCache':
    if state.get('version') != 1:
      raise ValueError(f'QueryCache state has version {state.get("version")!r}; '
                       'this code reads version 1.')
    cache = cls()
    for entry in state['entries']:
      cache._entries[_key(entry['engine'], entry['query'])] = entry
    return cache


class CachedEngine:
  """An engine that answers from a `QueryCache` when it can and fills it when it cannot."""

  def __init__(self, engine: SearchEngine, cache: QueryCache):
    self.engine = engine
    self.cache = cache
    self.name = engine.name

  async def search(self, query: str, n: int) -> list[Result]:
    hit = self.cache.get(self.name, query, n)
    if hit is not None:
      return hit
    results = await self.engine.search(query, n)
    self.cache.put(self.name, query, n, results)
    return results


def _key(engine: str, query: str) -> str:
  return f'{engine}\x00{query}'


__all__ = ['ENGINES', 'CachedEngine', 'EngineError', 'MissingKeyError', 'QueryCache', 'Result',
           'SearchEngine', 'make']
