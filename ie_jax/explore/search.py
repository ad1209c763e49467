"""Step 2 of an iteration: search every query, download the results into the store.

Resumable without lost or duplicated downloads: images go into store parts of
`part_size` records, each committed atomically. On a restart, the URLs in this iteration's
committed manifests are skipped, so only the part that was in progress is fetched again.

Reproducible: downloads finish in any order, but records are stored in job order (a
reorder buffer), and duplicates within the iteration are decided after the downloads, over
every process's records in job order. Which of two near-duplicates is kept therefore never
depends on network timing or the process count, and a resumed run keeps the same images as
an uninterrupted one.
"""
import asyncio
import collections
import dataclasses
import logging
import time

import tqdm

from ie_jax.utils import collectives, failpoints
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


def _committed(store: store_lib.WebStore, iteration: int) -> set[str]:
  """URLs already recorded in this process's committed parts of the iteration."""
  return {row['url'] for row in (store.manifest(iteration)
                                 if iteration in store.iterations() else ())}


class _ReadOnlyDedup:
  """A dedup index the downloader may consult but not extend."""

  def __init__(self, index: dedup_lib.DedupIndex):
    self._index = index

  def check(self, sha256: str, phash: int, thumb: bytes | None = None):
    return self._index.check(sha256, phash, thumb)

  def add(self, sha256: str, phash: int) -> None:
    del sha256, phash  # the search phase adds, in job order


def run(iteration: int, queries: list, engine, store, *, dedup: dedup_lib.DedupIndex,
        url_cache: dedup_lib.UrlCache, web_config, images_per_query: int,
        extra_file_roots=(), comm=collectives.Local()) -> dict:
  """Searches `queries` [(concept index, query)] and stores what downloads.

  One process or many run the same steps. The processes search a share of the queries
  each and gather every result, so all of them build the same job list (the results in
  query order). Process k of `comm.count` fetches jobs k, k + count, ... into its own
  shard of `store` (a `shards.ShardedStore`), checked against earlier iterations and the
  target's test images. After a barrier, every process decides the duplicates within the
  iteration over all shards, in job order; those it drops stay stored and are excluded
  (`ShardedStore.exclude`). So what is kept never depends on network timing or on the
  process count.

  Returns:
    Counts per status over the whole iteration, plus 'queries_without_results'.
  """
  results = _gather_results(engine, queries, images_per_query, web_config, comm)
  jobs = _jobs(queries, results, set())
  position = {job.url: i for i, job in enumerate(jobs)}
  done = _committed(store.own, iteration)
  mine = [job for job in jobs[comm.index::comm.count] if job.url not in done]
  log.info('Iteration %d: %d of %d URLs to fetch here (%d already stored or attempted).',
           iteration, len(mine), len(jobs), len(done))
  downloader = download.Downloader(download_options(web_config, extra_file_roots),
                                   dedup=_ReadOnlyDedup(dedup), url_cache=url_cache)
  _download_in_order(downloader, mine, store, iteration, web_config.part_size)
  comm.barrier(f'search-{iteration}')
  store.refresh()
  counts, excluded = collections.Counter(), {}
  rows = sorted(store.manifest(iteration, decided=False),
                key=lambda r: position.get(r['url'], len(jobs)))
  for row in rows:
    if row['status'] == OK:
      # Leaks were refused by the downloaders, on the pictures; this pass only finds
      # what the iteration itself holds twice.
      verdict = dedup.check(row['sha256'], int(row['phash'], 16), leaks=False)
      if verdict is None:
        dedup.add(row['sha256'], int(row['phash'], 16))
      else:
        excluded[row['index']] = list(verdict)
        row['status'], row['detail'] = verdict
    _cache_row(url_cache, row)
    counts[row['status']] += 1
  store.exclude(iteration, excluded, write=comm.primary)
  counts = dict(counts)
  counts['queries_without_results'] = sum(1 for q in dict.fromkeys(q for _, q in queries)
                                          if not results.get(q))
  return counts


def _download_in_order(downloader, jobs: list, store, iteration: int, part_size: int) -> dict:
  """Downloads `jobs` and stores their records in job order, `part_size` per committed part.

  Downloads finish in any order; a reorder buffer hands records to the store in job
  order, so the parts' contents never depend on network timing. Returns counts per status.
  """
  part = {'writer': None, 'count': 0}
  counts = collections.Counter()
  position = {job.url: i for i, job in enumerate(jobs)}
  waiting, next_position = {}, [0]

  def sink(record: Record) -> None:
    waiting[position[record.url]] = record
    while next_position[0] in waiting:
      write(waiting.pop(next_position[0]))
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


def _gather_results(engine, queries: list, images_per_query: int, web_config,
                    comm) -> dict:
  """Every query's results on every process; each process searches 1/count of them."""
  unique = list(dict.fromkeys(q for _, q in queries))
  mine, refused = _search_quota_aware(engine, unique[comm.index::comm.count],
                                      images_per_query, web_config)
  results, all_refused = {}, {}
  parts = comm.allgather_json({
      'results': {q: [dataclasses.astuple(r) for r in rs] for q, rs in mine.items()},
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
