"""Per-host request slots: slow requests give theirs back, and a host's limit adapts.

A host gets `per_host` requests in flight at first. With a plain semaphore, a few URLs
that stall, drip or trickle for tens of seconds hold the host's slots while its fast URLs
queue behind them: on one host at 100-300 ms latency, a hostile list took 310 s at 8 slots
and 88 s at 64 (issue #22). Two mechanisms, both bounded:

* **Slow requests give their slot back.** A request that has run `slow_factor` times
  longer than the host's median request (and at least `slow_min_s`) finishes outside the
  count, so the fast URLs go on. No more than the current limit plus (`slow_factor` - 1) x
  `per_host` requests to one host are ever open (32 at the defaults, until it grows).
* **The limit adapts, between 1 and `max_per_host`, as TCP's window does.** Until the
  host first shows overload, every request that finishes in time adds a slot (slow start:
  the limit doubles per round of answers); after that, it adds 1 / limit (one slot per
  limit's worth of answers). A host that says it is overloaded (429, 503: `OVERLOAD`)
  halves it. Timeouts and refused or reset connections (`SILENT_OVERLOAD`) halve it only
  when they are at least half of the host's last 16 outcomes (8 at least): on a hostile
  list, single URLs that stall or reset are faults of those URLs, and halving on each
  collapsed the limit to 1, so that the stalls then held the host's only slot (issue
  #22's side-by-side: 40 s instead of 10 s for 2,000 URLs). Other failures (404, a wrong
  content type) say nothing about load and leave it. As TCP halves once per window, only
  requests that started after the last halving can halve it again: 31 drips that were
  open together and timed out within a second took a host from 32 slots to 1 in five
  halvings, all for one burst of load that the first halving had already answered.

Hosts in `strict` (those that ask for few connections, such as upload.wikimedia.org) keep
their limit and never give slots back.
"""
import asyncio
import collections
import contextlib
import statistics
import time

_HISTORY = 64      # durations kept per host for its median
_MIN_HISTORY = 4   # below this, the threshold is `slow_min_s`
# Failure reasons (`records.REASONS`) by which a host says it is overloaded.
OVERLOAD = frozenset({'http_429', 'http_503'})
# Failures that mean overload when most requests end in them, and a bad URL when few do.
SILENT_OVERLOAD = frozenset({'timeout', 'connection_error'})
_RECENT = 16      # outcomes kept per host for that share
_MIN_RECENT = 8


class HostSlots:
  """The slots of one host."""

  def __init__(self, limit: int, *, slow_factor: float, slow_min_s: float, strict: bool,
               max_limit: int | None = None):
    self.limit = float(limit)
    self._start = limit
    self._slow_start = True  # until the host first shows overload
    self._cuts = 0  # halvings so far; a request's outcome counts against the load only
                    # if no halving came after the request started
    self._max_limit = limit if strict else max(limit, max_limit or limit)
    self._held = 0     # requests holding a slot
    self._open = 0     # requests open, slots given back included
    self._waiters = collections.deque()  # futures of requests waiting for a slot
    self._durations = collections.deque(maxlen=_HISTORY)
    self._recent = collections.deque(maxlen=_RECENT)  # True: a silent-overload failure
    self._slow_factor = slow_factor
    self._slow_min_s = slow_min_s
    self._release = not strict and slow_factor > 0
    self.released = 0  # requests that gave their slot back (for logs and tests)
    self.most_open = 0

  def threshold_s(self) -> float:
    """How long a request may run before it gives its slot back."""
    if len(self._durations) < _MIN_HISTORY:
      return self._slow_min_s
    return max(self._slow_min_s, self._slow_factor * statistics.median(self._durations))

  def _slots(self) -> int:
    return max(1, int(self.limit))

  def _free(self) -> bool:
    # Slow requests may hold (slow_factor - 1) x the starting limit beyond the slots.
    open_cap = self._slots() + int(self._start * max(self._slow_factor - 1.0, 0.0))
    return self._held < self._slots() and self._open < open_cap

  def _wake(self) -> None:
    """Every waiter checks again (few wait per host; the first free ones win)."""
    while self._waiters:
      future = self._waiters.popleft()
      if not future.done():
        future.set_result(None)

  def _adapt(self, error: BaseException | None, in_time: bool, cuts_at_start: int) -> None:
    reason = getattr(error, 'reason', None)
    if cuts_at_start < self._cuts and reason in OVERLOAD | SILENT_OVERLOAD:
      return  # the load it met was answered by a halving since it started
    self._recent.append(reason in SILENT_OVERLOAD)
    widespread = (len(self._recent) >= _MIN_RECENT
                  and 2 * sum(self._recent) >= len(self._recent))
    if reason in OVERLOAD or (reason in SILENT_OVERLOAD and widespread):
      self.limit = max(1.0, self.limit / 2)
      self._slow_start = False
      self._cuts += 1
      self._recent.clear()  # one halving per burst, as TCP halves once per round trip
    elif error is None and in_time:
      step = 1.0 if self._slow_start else 1.0 / self.limit
      self.limit = min(float(self._max_limit), self.limit + step)

  @contextlib.asynccontextmanager
  async def slot(self):
    loop = asyncio.get_running_loop()
    while not self._free():
      future = loop.create_future()
      self._waiters.append(future)
      try:
        await future
      except asyncio.CancelledError:
        self._wake()  # a wake-up meant for this waiter goes to the others
        raise
    self._held += 1
    self._open += 1
    self.most_open = max(self.most_open, self._open)
    held = True

    def give_back(slow: bool = False):
      nonlocal held
      if held:
        held = False
        self._held -= 1
        self.released += slow
        self._wake()

    timer = loop.call_later(self.threshold_s(), give_back, True) if self._release else None
    start = time.monotonic()
    cuts_at_start = self._cuts
    error = None
    try:
      yield
    except BaseException as e:
      error = e
      raise
    finally:
      if timer is not None:
        timer.cancel()
      self._durations.append(time.monotonic() - start)
      self._adapt(error, in_time=held, cuts_at_start=cuts_at_start)
      give_back()
      self._open -= 1
      self._wake()


class Hosts:
  """`HostSlots` per host name, made on first use."""

  def __init__(self, per_host: int, *, slow_factor: float = 4.0, slow_min_s: float = 2.0,
               host_limits=(), max_per_host: int | None = None):
    self._per_host = per_host
    self._max_per_host = max_per_host
    self._limits = dict(host_limits)
    self._slow = (slow_factor, slow_min_s)
    self._hosts: dict[str, HostSlots] = {}

  def __getitem__(self, host: str) -> HostSlots:
    if host not in self._hosts:
      strict = host in self._limits
      self._hosts[host] = HostSlots(self._limits.get(host, self._per_host),
                                    slow_factor=self._slow[0], slow_min_s=self._slow[1],
                                    strict=strict, max_limit=self._max_per_host)
    return self._hosts[host]
