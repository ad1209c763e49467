"""The downloader: (url, query, concept) jobs in, one `Record` per job out.

On its own, from a URL list to files: `python -m ie_jax.web.download URLS OUT`
(`download_tool.py`).

  records = []
  options = download.DownloadOptions(image=validate.ImageLimits(short_side=256))
  counts = download.download(jobs, sink=records.append, options=options)

Each job goes: URL cache -> fetch (HTTP(S) or file://, see `fetch.py`) -> decode, check and
re-encode in a worker process or thread (`validate.py`, `decode_pool.py`) -> test-leak and
duplicate checks
(`dedup.py`) -> the sink. Nothing is written to disk here; the sink owns storage. No file
name or path is ever derived from a URL or an API string.
"""
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import tqdm

from ie_jax.web import decode_pool
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import fetch as fetch_lib
from ie_jax.web import phash as phash_lib
from ie_jax.web import validate
from ie_jax.web.records import OK, Job, Record, Rejected

log = logging.getLogger(__name__)

Sink = Callable[[Record], Awaitable[None] | None]


@dataclasses.dataclass(frozen=True)
class DownloadOptions:
  """Everything the downloader can be told.

  Attributes:
    fetch: network limits, timeouts, retries, the address allow-list and file roots.
    image: decode limits and the re-encoding.
    decode_processes: worker processes decoding, resizing, re-encoding and hashing; -1
      means one per CPU core, 0 does that work in `decode_workers` threads instead.
    decode_workers: threads reading file:// URLs, and decoding when `decode_processes` is
      0 (Pillow releases the GIL while it works); 0 means one per CPU core.
    progress: show a tqdm bar over the jobs.
  """
  fetch: fetch_lib.FetchOptions = fetch_lib.FetchOptions()
  image: validate.ImageLimits = validate.ImageLimits()
  decode_processes: int = 0
  decode_workers: int = 0
  progress: bool = True


class Downloader:
  """Runs jobs against shared dedup and URL-cache state.

  Args:
    options: see `DownloadOptions`.
    dedup: hashes kept in earlier iterations and the forbidden test hashes; updated in
      place with every image this downloader keeps. A fresh one if None.
    url_cache: URLs attempted earlier; updated in place. A fresh one if None.
    resolver: an aiohttp resolver for host names (default: the system's); the address
      guard checks its every answer. Tests and benchmarks pass a fixed table.
  """

  def __init__(self, options: DownloadOptions = DownloadOptions(),
               dedup: dedup_lib.DedupIndex | None = None,
               url_cache: dedup_lib.UrlCache | None = None, resolver=None):
    self.options = options
    self.resolver = resolver
    self.dedup = dedup if dedup is not None else dedup_lib.DedupIndex()
    self.url_cache = url_cache if url_cache is not None else dedup_lib.UrlCache()

  async def run(self, jobs: Iterable[Job], sink: Sink) -> collections.Counter:
    """Feeds every job's record to `sink` (sync or async) as it completes.

    Returns:
      The number of records per status.
    """
    counts = collections.Counter()
    async for record in self.records(jobs):
      counts[record.status] += 1
      result = sink(record)
      if inspect.isawaitable(result):
        await result
    failed = {k: v for k, v in counts.items() if k != OK}
    log.info('Downloaded %d of %d; failures by reason: %s', counts[OK], counts.total(),
             dict(sorted(failed.items(), key=lambda kv: -kv[1])))
    return counts

  async def records(self, jobs: Iterable[Job]) -> AsyncIterator[Record]:
    """Yields one record per job, in completion order."""
    jobs = list(jobs)
    workers = self.options.decode_workers or os.cpu_count() or 1
    processes = self.options.decode_processes
    if processes < 0:
      processes = os.cpu_count() or 1
    # Enough tasks started to keep every connection busy while some wait on a busy host,
    # without one task per job in memory for a very long job list.
    max_pending = 8 * self.options.fetch.concurrency
    bar = tqdm.tqdm(total=len(jobs), unit='url', desc='download',
                    disable=not self.options.progress)
    inflight: dict[str, asyncio.Future] = {}
    ok = 0
    # Finished tasks hand their records over through a queue: asyncio.wait() over the whole
    # pending set would cost O(pending) per completion.
    finished: asyncio.Queue = asyncio.Queue()
    with (concurrent.futures.ThreadPoolExecutor(workers, 'ie-decode') as executor,
          contextlib.closing(decode_pool.DecodePool(processes, executor)) as decoder):
      async with fetch_lib.new_session(self.options.fetch, self.resolver) as session:
        fetcher = fetch_lib.Fetcher(session, self.options.fetch, executor)
        pending: set[asyncio.Task] = set()

        def start(job: Job) -> None:
          task = asyncio.create_task(self._one(job, fetcher, decoder, inflight))
          pending.add(task)
          task.add_done_callback(finished.put_nowait)

        todo = iter(jobs)
        try:
          for job in todo:
            start(job)
            if len(pending) >= max_pending:
              break
          while pending:
            task = await finished.get()
            pending.discard(task)
            record = task.result()
            for job in todo:  # keep max_pending tasks started
              start(job)
              break
            ok += record.status == OK
            bar.update()
            bar.set_postfix(ok=ok, refresh=False)
            yield record
        finally:
          for task in pending:
            task.cancel()
          await asyncio.gather(*pending, return_exceptions=True)
          bar.close()

  async def _one(self, job: Job, fetcher: fetch_lib.Fetcher, decoder: decode_pool.DecodePool,
                 inflight: dict[str, asyncio.Future]) -> Record:
    key = dedup_lib.url_key(job.url)
    cached = self.url_cache.get(job.url)
    if cached is not None:
      return _duplicate_url(job, cached, 'attempted in an earlier run')
    if key in inflight:
      first = await asyncio.shield(inflight[key])
      return _duplicate_url(job, dataclasses.asdict(first), 'repeated in this run')
    future = inflight[key] = asyncio.get_running_loop().create_future()
    try:
      record = await self._attempt(job, fetcher, decoder)
    except BaseException as e:  # a bug or a cancel: later copies of the URL must not hang
      if isinstance(e, asyncio.CancelledError):
        future.cancel()
      else:
        future.set_exception(e)
        future.exception()  # marks it retrieved, so no "never retrieved" warning
      raise
    self.url_cache.put(record)
    future.set_result(record)
    return record

  async def _attempt(self, job: Job, fetcher: fetch_lib.Fetcher,
                     decoder: decode_pool.DecodePool) -> Record:
    try:
      data = await fetcher.fetch(job.url)
      processed = await decoder.process(data, self.options.image)
    except Rejected as failure:
      return _record(job, failure.reason, detail=failure.detail)
    except Exception as e:  # pylint: disable=broad-exception-caught
      # A bug in our code or a library's, met on one URL: it becomes that URL's record, so
      # the other jobs (and the run) go on, and the count shows up in the run's metrics.
      log.error('Internal error on %s: %s: %s', job.url[:200], type(e).__name__, e,
                exc_info=True)
      return _record(job, 'internal_error',
                     detail=f'{type(e).__name__}: {e}'[:300])
    del data
    fields = dict(sha256=processed.sha256, phash=phash_lib.to_hex(processed.phash),
                  width=processed.width, height=processed.height)
    # Check and add with no await in between: no other task can keep the same image
    # between the two, so two copies finishing together still yield one 'ok'.
    verdict = self.dedup.check(processed.sha256, processed.phash, processed.thumb)
    if verdict is not None:
      return _record(job, verdict[0], detail=verdict[1], **fields)
    self.dedup.add(processed.sha256, processed.phash)
    return _record(job, OK, jpeg=processed.jpeg, thumb=processed.thumb, **fields)


def _record(job: Job, status: str, **fields) -> Record:
  return Record(job.url, job.query, job.concept, status, caption=job.caption, **fields)


def _duplicate_url(job: Job, first: dict, where: str) -> Record:
  return _record(job, 'duplicate_url', sha256=first['sha256'], phash=first['phash'],
                 width=first['width'], height=first['height'],
                 detail=f'{where}, status {first["status"]}')


def download(jobs: Iterable[Job], sink: Sink, options: DownloadOptions = DownloadOptions(),
             dedup: dedup_lib.DedupIndex | None = None,
             url_cache: dedup_lib.UrlCache | None = None) -> collections.Counter:
  """Synchronous `Downloader(...).run(jobs, sink)` for callers outside an event loop."""
  return asyncio.run(Downloader(options, dedup, url_cache).run(jobs, sink))


if __name__ == '__main__':
  from ie_jax.web import download_tool  # pylint: disable=g-import-not-at-top
  raise SystemExit(download_tool.main())
