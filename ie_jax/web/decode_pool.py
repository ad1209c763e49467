"""Runs `validate.process` off the event loop: in worker processes, or in threads.

  pool = decode_pool.DecodePool(processes=2, threads=executor)
  processed = await pool.process(data, limits)   # raises records.Rejected
  pool.close()

Worker processes put decode, resize, re-encode and hashing on every core without sharing
the event loop's GIL, and keep a decoder that crashes (a segfault on a hostile file) from
taking the downloader with it: the image is recorded as a 'decode_error' and a fresh pool
takes over. Workers are spawned, never forked: the parent may hold JAX's threads and locks.
"""
import asyncio
import concurrent.futures
import multiprocessing

from ie_jax.web import validate
from ie_jax.web.records import Rejected


def _process_in_worker(data: bytes, limits: validate.ImageLimits):
  """`validate.process` for a worker: a `Rejected` comes back as a value.

  `Rejected` does not survive pickling (its constructor takes (reason, detail), but
  Exception pickles only its message), so the reason travels as a plain tuple.
  """
  try:
    return validate.process(data, limits)
  except Rejected as failure:
    return ('rejected', failure.reason, failure.detail)


class DecodePool:
  """`validate.process` in `processes` spawned workers, or in `threads` when 0.

  Args:
    processes: worker processes; 0 runs `validate.process` in `threads` instead.
    threads: an executor for the thread mode (also what the caller uses for file reads).
  """

  def __init__(self, processes: int, threads: concurrent.futures.Executor):
    self._processes = processes
    self._threads = threads
    self._pool: concurrent.futures.ProcessPoolExecutor | None = None
    self._context = multiprocessing.get_context('spawn')

  def _current(self) -> concurrent.futures.ProcessPoolExecutor:
    if self._pool is None:
      self._pool = concurrent.futures.ProcessPoolExecutor(self._processes,
                                                          mp_context=self._context)
    return self._pool

  async def process(self, data: bytes, limits: validate.ImageLimits) -> validate.Processed:
    """The processed image. Raises `Rejected` (a dead worker: 'decode_error')."""
    loop = asyncio.get_running_loop()
    if not self._processes:
      return await loop.run_in_executor(self._threads, validate.process, data, limits)
    # A worker that dies breaks the whole pool, and with it every image then in flight. Each
    # image gets a second try on a fresh pool; one that breaks that too is the likely culprit.
    for attempt in range(2):
      pool = self._current()
      try:
        result = await asyncio.wrap_future(pool.submit(_process_in_worker, data, limits))
        break
      except concurrent.futures.process.BrokenProcessPool as e:
        self._replace(pool)
        if attempt:
          raise Rejected('decode_error', f'the decoding process died: {e}') from None
    if isinstance(result, tuple):
      raise Rejected(result[1], result[2])
    return result

  def _replace(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
    if self._pool is broken:  # the first of the images that saw it break
      self._pool = None
      broken.shutdown(wait=True, cancel_futures=True)

  def close(self) -> None:
    """Stops the workers; waits for them to exit so that no process or pipe outlives us."""
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None
