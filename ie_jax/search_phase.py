"""Step 2 of an iteration: search every query, download the results into the store.

Resumable without lost or duplicated downloads: images go into store parts of
`part_size` records, each committed atomically. On a restart, the URLs in this iteration's
committed manifests are skipped and their hashes re-enter the dedup index, so only the
part that was in progress is fetched again.

Reproducible: downloads finish in any order, but records are stored, and checked for
duplicates within the iteration, in job order (a reorder buffer). Which of two near-
duplicates is kept therefore never depends on network timing, and a resumed run keeps the
same images as an uninterrupted one.
"""
import asyncio
import collections
import dataclasses
import logging
import time

import tqdm

from ie_jax.utils import failpoints
from ie_jax.web import api
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import download, engines, fetch, validate
from ie_jax.web import store as store_lib
from ie_jax.web.records import OK, Job, Record

log = logging.getLogger(__name__)


def download_options(web_config, extra_file_roots=()) -> download.DownloadOptions:
  """The downloader's options from `config.web` (plus, e.g., an offline world's corpus)."""
  return download.DownloadOptions(
      fetch=fetch.FetchOptions(
          concurrency=web_config.concurrency, per_host=web_config.per_host,
          max_per_host=web_config.max_per_host,
          slow_factor=web_config.slow_factor, slow_min_s=web_config.slow_min_s,
          total_timeout_s=web_config.timeout_s,
          allow_networks=tuple(n for n in web_config.allow_networks.split(',') if n),
          file_roots=tuple(r for r in web_config.file_roots.split(',') if r)
          + tuple(extra_file_roots)),
      image=validate.ImageLimits(min_side=web_config.min_side, short_side=web_config.max_side),
      decode_processes=web_config.decode_processes, progress=True)


class QuotaStop(RuntimeError):
  """The engine's quota ran out for too many of an iteration's queries: the run stops
  before downloading or training on a partial iteration. The message says when the quota
  resets and what to do."""

  def __init__(self, engine: str, lost: int, total: int, reset_in_s: float | None,
               web_config):
    at = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(time.time() + (reset_in_s or 0)))
    when = (f'in about {reset_in_s / 60:.0f} min ({at})' if reset_in_s
            else 'at a time the API did not say')
    super().__init__(
        f'The {engine} engine refused {lost} of {total} queries for quota or rate limits '
        f'(more than config.web.max_quota_loss={web_config.max_quota_loss:g}); its quota '
        f'resets {when}. Nothing of this iteration was downloaded or trained on. Run the '
        'same command again after the reset to resume here, set '
        '--config.web.wait_for_quota=True to wait for it instead, or raise the quota (a '
        "registered key: see the README's engine notes).")
    self.lost, self.total, self.reset_in_s = lost, total, reset_in_s


async def _search_all(engine, queries: list[str], n: int, concurrency: int):
  """(query -> results, query -> quota reset in s or None for those the quota refused);
  other failures are logged and give no results (the query scores nothing)."""
  gate = asyncio.Semaphore(concurrency)
  out, refused = {}, {}
  unique = list(dict.fromkeys(queries))
  # An API paced at its documented rate takes minutes for an iteration's queries.
  bar = tqdm.tqdm(total=len(unique), desc='search', unit='query', leave=False)

  async def one(query):
    async with gate:
      try:
        out[query] = await engine.search(query, n)
      except api.QuotaExhausted as e:
        log.warning('Search for %r refused: %s', query, e)
        out[query], refused[query] = [], e.reset_in_s
      except engines.EngineError as e:
        log.warning('Search for %r failed: %s', query, e)
        out[query] = []
      bar.update(1)
  try:
    await asyncio.gather(*(one(q) for q in unique))
  finally:
    bar.close()
  return out, refused


def _over_quota(refused: dict, total: int, web_config) -> bool:
  return bool(refused) and len(refused) > web_config.max_quota_loss * max(total, 1)


def _check_quota(engine, refused: dict, total: int, web_config) -> None:
  """Raises `QuotaStop` when the quota refused too many of `total` queries."""
  if _over_quota(refused, total, web_config):
    reset = _reset_in(refused, web_config) if any(refused.values()) else None
    raise QuotaStop(engine.name, len(refused), total, reset, web_config)


def _reset_in(refused: dict, web_config) -> float:
  known = [r for r in refused.values() if r]
  return max(known) if known else web_config.quota_wait_s


def _search_quota_aware(engine, queries: list[str], n: int, web_config):
  """`_search_all`, and with `web_config.wait_for_quota`, waiting out quota refusals (the
  longest Retry-After, else `quota_wait_s`) and asking the refused queries again."""
  results, refused = asyncio.run(_search_all(engine, queries, n, web_config.search_concurrency))
  total = len(dict.fromkeys(queries))
  while web_config.wait_for_quota and _over_quota(refused, total, web_config):
    wait = _reset_in(refused, web_config)
    log.warning('The %s quota refused %d of %d queries: waiting %.0f s for the reset '
                '(config.web.wait_for_quota).', engine.name, len(refused), total, wait)
    time.sleep(wait)
    again, refused = asyncio.run(_search_all(engine, list(refused), n,
                                             web_config.search_concurrency))
    results.update(again)
  return results, refused


def _cache_row(url_cache, row: dict) -> None:
  fields = {k: row.get(k, '') for k in ('url', 'query', 'concept', 'status', 'sha256',
                                        'phash', 'detail')}
  url_cache.put(Record(width=row.get('width', 0), height=row.get('height', 0), **fields))


def _committed(store: store_lib.WebStore, iteration: int, dedup, url_cache) -> set[str]:
  """URLs already recorded in this iteration's committed parts; re-registers their hashes.

  `dedup` None: the hashes are left for the caller (the multi-process pass).
  """
  done = set()
  for row in store.manifest(iteration) if iteration in store.iterations() else ():
    done.add(row['url'])
    if dedup is not None and row['status'] == OK and row.get('sha256') and row.get('phash'):
      dedup.add(row['sha256'], int(row['phash'], 16))
    _cache_row(url_cache, row)
  return done


class _ReadOnlyDedup:
  """A dedup index the downloader may consult but not extend."""

  def __init__(self, index: dedup_lib.DedupIndex):
    self._index = index

  def check(self, sha256: str, phash: int, thumb: bytes | None = None):
    return self._index.check(sha256, phash, thumb)

  def add(self, sha256: str, phash: int) -> None:
    del sha256, phash  # the search phase adds, in job order


def run(iteration: int, queries: list, engine, store: store_lib.WebStore, *,
        dedup: dedup_lib.DedupIndex, url_cache: dedup_lib.UrlCache, web_config,
        images_per_query: int, extra_file_roots=()) -> dict:
  """Searches `queries` [(concept index, query)] and stores what downloads.

  Returns:
    Counts per download status, plus 'queries_without_results'.
  """
  results, refused = _search_quota_aware(engine, [q for _, q in queries], images_per_query,
                                         web_config)
  _check_quota(engine, refused, len(dict.fromkeys(q for _, q in queries)), web_config)
  done = _committed(store, iteration, dedup, url_cache)
  jobs = _jobs(queries, results, done)
  if jobs or done:
    log.info('Iteration %d: %d URLs to fetch (%d already stored or attempted).', iteration,
             len(jobs), len(done))
  # The downloader checks against earlier iterations and the target's test images only;
  # duplicates within this iteration are decided here, in job order.
  downloader = download.Downloader(download_options(web_config, extra_file_roots),
                                   dedup=_ReadOnlyDedup(dedup), url_cache=url_cache)

  def decide(record: Record) -> Record:
    if record.status != OK:
      return record
    verdict = dedup.check(record.sha256, int(record.phash, 16), record.thumb)
    if verdict is None:
      dedup.add(record.sha256, int(record.phash, 16))
      return record
    return dataclasses.replace(record, status=verdict[0], detail=verdict[1], jpeg=None,
                               thumb=None)

  counts = _download_in_order(downloader, jobs, store, iteration, web_config.part_size,
                              decide)
  counts['queries_without_results'] = sum(1 for q in dict.fromkeys(q for _, q in queries)
                                          if not results.get(q))
  return counts


def _download_in_order(downloader, jobs: list, store, iteration: int, part_size: int,
                       decide=lambda record: record) -> dict:
  """Downloads `jobs` and stores their records in job order, `part_size` per committed part.

  Downloads finish in any order; a reorder buffer hands records to `decide` (which may turn
  one into a failure, e.g. a duplicate) and to the store in job order, so what is kept never
  depends on network timing. Returns counts per status.
  """
  part = {'writer': None, 'count': 0}
  counts = collections.Counter()
  position = {job.url: i for i, job in enumerate(jobs)}
  waiting, next_position = {}, [0]

  def sink(record: Record) -> None:
    waiting[position[record.url]] = record
    while next_position[0] in waiting:
      write(decide(waiting.pop(next_position[0])))
      next_position[0] += 1

  def write(record: Record) -> None:
    counts[record.status] += 1
    if part['writer'] is None:
      part['writer'] = store.writer(iteration)
    row = record.manifest_row()
    if record.status == OK:
      part['writer'].add(record.jpeg, row)
    else:
      part['writer'].add_failure(row)
    part['count'] += 1
    if part['count'] >= part_size:
      part['writer'].commit()
      part['writer'], part['count'] = None, 0
      failpoints.hit('search')  # a part is committed, the rest of the phase is not

  try:
    asyncio.run(downloader.run(jobs, sink))
  except BaseException:
    if part['writer'] is not None:
      part['writer'].abort()
    raise
  if part['writer'] is not None:
    part['writer'].commit()
  return dict(counts)


_CAPTION_CHARS = 500


def _jobs(queries: list, results: dict, done: set) -> list[Job]:
  """One job per URL not in `done`, in query order (a URL two queries share: the first)."""
  jobs, seen = [], set(done)
  for concept, query in queries:
    for r in results.get(query, []):
      if r.url not in seen:
        # The engine's caption, kept for the policy (gp_input 'captions'); bounded, since
        # an engine's title is untrusted text.
        jobs.append(Job(url=r.url, query=query, concept=str(concept),
                        caption=str(r.title)[:_CAPTION_CHARS]))
        seen.add(r.url)
  return jobs


def _gather_results(engine, queries: list, images_per_query: int, web_config, index: int,
                    count: int, gather) -> dict:
  """Every query's results on every process; each process searches 1/count of them."""
  unique = list(dict.fromkeys(q for _, q in queries))
  mine, refused = _search_quota_aware(engine, unique[index::count], images_per_query,
                                      web_config)
  results, all_refused = {}, {}
  parts = gather({'results': {q: [dataclasses.astuple(r) for r in rs] for q, rs in mine.items()},
                  'refused': refused})
  for part in parts:  # every process decides on the same numbers
    all_refused.update(part['refused'])
  _check_quota(engine, all_refused, len(unique), web_config)
  for part in (p['results'] for p in parts):
    for query, rows in part.items():
      results[query] = [engines.Result(*row) for row in rows]
      cache = getattr(engine, 'cache', None)
      if cache is not None and query not in mine and rows:
        cache.put(engine.name, query, images_per_query, results[query])
  return results


def run_sharded(iteration: int, queries: list, engine, store, *, dedup, url_cache,
                web_config, images_per_query: int, extra_file_roots=(), index: int,
                count: int, gather, barrier) -> tuple[dict, list]:
  """`run` for process `index` of `count`, each downloading into its own store shard.

  Every process builds the same job list (queries' results in query order); process k
  fetches jobs k, k + count, ... into `store`'s own shard, checked against earlier
  iterations only. After a barrier, every process makes the single-process run's
  within-iteration duplicate decisions over all shards, in job order, so all processes
  (and a one-process run) keep the same images: duplicates stay stored but are excluded.

  Args:
    store: a `shards.ShardedStore`.
    gather: `distributed.allgather_json`; barrier: `distributed.barrier`.

  Returns:
    (counts as `run`'s, excluded [(iteration, index)] of stored duplicates).
  """
  results = _gather_results(engine, queries, images_per_query, web_config, index, count,
                            gather)
  jobs = _jobs(queries, results, set())
  position = {job.url: i for i, job in enumerate(jobs)}
  done = _committed(store.own, iteration, None, url_cache)
  mine = [job for job in jobs[index::count] if job.url not in done]
  log.info('Iteration %d, process %d: %d of %d URLs to fetch.', iteration, index, len(mine),
           len(jobs))
  downloader = download.Downloader(download_options(web_config, extra_file_roots),
                                   dedup=_ReadOnlyDedup(dedup), url_cache=url_cache)
  _download_in_order(downloader, mine, store, iteration, web_config.part_size)
  barrier(f'search-{iteration}')
  store.refresh()
  counts, excluded = collections.Counter(), []
  rows = sorted(store.manifest(iteration), key=lambda r: position.get(r['url'], len(jobs)))
  for row in rows:
    _cache_row(url_cache, row)
    status = row['status']
    if status == OK:
      # Leaks were refused by each process's downloader, on the pictures; this pass only
      # finds what two processes both kept.
      verdict = dedup.check(row['sha256'], int(row['phash'], 16), leaks=False)
      if verdict is None:
        dedup.add(row['sha256'], int(row['phash'], 16))
      else:
        status = verdict[0]
        excluded.append((iteration, row['index']))
    counts[status] += 1
  counts = dict(counts)
  counts['queries_without_results'] = sum(1 for q in dict.fromkeys(q for _, q in queries)
                                          if not results.get(q))
  return counts, excluded
