"""Per-host request slots that slow requests give back.

A host gets `per_host` requests in flight. With a plain semaphore, a few URLs that stall,
drip or trickle for tens of seconds hold the host's slots while its fast URLs queue behind
them: on one host at 100-300 ms latency, a hostile list took 310 s at 8 slots and 88 s at
64 (issue #22). Here a request that has run `slow_factor` times longer than the host's
median request (and at least `slow_min_s`) gives its slot back and finishes outside the
count, so the fast URLs go on at `per_host` at a time. Politeness stays bounded: no more
than `slow_factor` x `per_host` requests to one host are ever open (`max_open`), and hosts
in `strict` (those that ask for few connections) never give slots back.
"""
import asyncio
import collections
import contextlib
import statistics
import time

_HISTORY = 64      # durations kept per host for its median
_MIN_HISTORY = 4   # below this, the threshold is `slow_min_s`


class HostSlots:
  """The slots of one host."""

  def __init__(self, limit: int, *, slow_factor: float, slow_min_s: float, strict: bool):
    self._slots = asyncio.Semaphore(limit)
    self._open = asyncio.Semaphore(max(limit, int(limit * max(slow_factor, 1.0))))
    self._durations = collections.deque(maxlen=_HISTORY)
    self._slow_factor = slow_factor
    self._slow_min_s = slow_min_s
    self._release = not strict and slow_factor > 0
    self.released = 0  # requests that gave their slot back (for logs and tests)

  def threshold_s(self) -> float:
    """How long a request may run before it gives its slot back."""
    if len(self._durations) < _MIN_HISTORY:
      return self._slow_min_s
    return max(self._slow_min_s, self._slow_factor * statistics.median(self._durations))

  @contextlib.asynccontextmanager
  async def slot(self):
    async with self._open:
      await self._slots.acquire()
      held = True

      def give_back(slow: bool = False):
        nonlocal held
        if held:
          held = False
          self._slots.release()
          self.released += slow

      timer = (asyncio.get_running_loop().call_later(self.threshold_s(), give_back, True)
               if self._release else None)
      start = time.monotonic()
      try:
        yield
      finally:
        if timer is not None:
          timer.cancel()
        self._durations.append(time.monotonic() - start)
        give_back()


class Hosts:
  """`HostSlots` per host name, made on first use."""

  def __init__(self, per_host: int, *, slow_factor: float = 4.0, slow_min_s: float = 2.0,
               host_limits=()):
    self._per_host = per_host
    self._limits = dict(host_limits)
    self._slow = (slow_factor, slow_min_s)
    self._hosts: dict[str, HostSlots] = {}

  def __getitem__(self, host: str) -> HostSlots:
    if host not in self._hosts:
      strict = host in self._limits
      self._hosts[host] = HostSlots(self._limits.get(host, self._per_host),
                                    slow_factor=self._slow[0], slow_min_s=self._slow[1],
                                    strict=strict)
    return self._hosts[host]
