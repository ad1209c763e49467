"""The explorer's resumable state: where the loop is, and what it has learned.

Small values live in the checkpoint's JSON `meta`; growing ones (the replay buffer, the
caches) live in files under `workdir/explorer/` whose names the state records. Each such
file is written under a new name (tagged with the save counter) before the checkpoint that
names it, so a checkpoint never points at a file written after it.
"""
import dataclasses
import json
import os
import re

import numpy as np

from ie_jax.concepts import policy
from ie_jax.utils import atomic

@dataclasses.dataclass
class ExplorerState:
  """Everything needed to resume the loop, except the TrainState.

  Attributes:
    iteration: the iteration in progress (0-based).
    phase: the next phase to run in it (one of `loop.Explorer.PHASES`).
    saves: checkpoints written so far (= the Orbax step of the latest).
    queries: this iteration's [(concept index, query string)], set by 'sample'.
    observations: the policy's history (`policy.Observations.to_state()`).
    files: name -> file under workdir/explorer/ (the `Carried` fields).
    data_iter: inside 'train', every process's Grain iterator state in process order (None
      outside it; a single dict in runs saved before 2026-12-07).
    train_steps_done: optimizer steps of this iteration's 'train' already taken.
    current: the summary of the iteration in progress, phase by phase.
    history: one summary dict per finished iteration (for logs and the report).
  """
  iteration: int = 0
  phase: str = 'sample'
  saves: int = 0
  queries: list = dataclasses.field(default_factory=list)
  observations: dict | None = None
  files: dict = dataclasses.field(default_factory=dict)
  data_iter: list | dict | None = None
  train_steps_done: int = 0
  current: dict = dataclasses.field(default_factory=dict)
  history: list = dataclasses.field(default_factory=list)

  def policy_observations(self, vocab_size: int) -> policy.Observations:
    """The policy's history as `policy.Observations` (none before the first update)."""
    if self.observations is None:
      return policy.Observations(vocab_size)
    return policy.Observations.from_state(self.observations, vocab_size)

  def to_meta(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_meta(cls, meta: dict, phases: tuple[str, ...]) -> 'ExplorerState':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(meta) - known
    if unknown:
      raise ValueError(f'Explorer state has unknown fields {sorted(unknown)}: written by '
                       'another version of ie_jax?')
    state = cls(**meta)
    if state.phase not in phases:
      raise ValueError(f'Explorer state phase {state.phase!r} is not one of {phases}.')
    return state

  def record(self, phases: tuple[str, ...], summary: dict, seconds: float) -> dict | None:
    """Adds the current phase's `summary` and time to the iteration's, and moves to the
    next phase. After the last, returns the iteration's summary (also added to history)."""
    current, phase = self.current, self.phase
    current.update(summary)
    current[f'time_{phase}_s'] = current.get(f'time_{phase}_s', 0) + seconds
    done = None
    if phase == phases[-1]:
      done = {'iteration': self.iteration, **current}
      self.history.append(done)
      self.current = {}
    self.advance(phases)
    return done

  def advance(self, phases: tuple[str, ...]) -> None:
    """Moves to the next of `phases` (and to the next iteration after the last)."""
    i = phases.index(self.phase)
    if i + 1 < len(phases):
      self.phase = phases[i + 1]
    else:
      self.phase, self.iteration = phases[0], self.iteration + 1


class _Field:
  """A field of `Carried`: one side file, named after the field."""

  def __init__(self, doc: str = ''):
    self.__doc__ = doc

  def __set_name__(self, owner, name):
    self.key = name  # the file's name in `ExplorerState.files`


class _Array(_Field):
  """A field held as a NumPy array (empty before the first write)."""

  def __init__(self, dtype, tail: tuple = (), doc: str = ''):
    super().__init__(doc)
    self._dtype, self._tail = dtype, tail

  def __get__(self, carried, owner=None) -> np.ndarray:
    if carried is None:
      return self
    return carried.side.load_array(carried.state, self.key,
                                   np.zeros((0, *self._tail), self._dtype))

  def __set__(self, carried, value) -> None:
    carried.side.save_array(carried.state, self.key, np.asarray(value, self._dtype))


class _Json(_Field):
  """A field held as JSON (None before the first write)."""

  def __get__(self, carried, owner=None):
    if carried is None:
      return self
    return carried.side.load_json(carried.state, self.key)

  def __set__(self, carried, value) -> None:
    carried.side.save_json(carried.state, self.key, value)


class Carried:
  """What the loop carries between phases and iterations, as typed fields.

  Reading a field loads the file the state names (empty, or None for JSON, before the
  first write); setting one writes a new file and points the state at it, for the next
  checkpoint to name. The files are named after the fields, so earlier runs resume.
  """
  rewards = _Array(np.float32, doc='(images,) this iteration\'s image rewards by store '
                   'index (reward phase; read by replay and update).')
  replay = _Array(np.int64, (2,), doc='(n, 2) the replay buffer, [(iteration, index)].')
  searched = _Array(np.int64, doc='(n,) concepts whose query was searched.')
  reward_keys = _Array(np.uint64, doc='(n,) sha keys of every image kept so far ...')
  reward_values = _Array(np.float32, doc='(n,) ... and their rewards (the reward book).')
  caption_keys = _Array(np.uint64, doc='(n,) the caption GP\'s images (gp_input '
                        '"captions"), by sha key ...')
  caption_embeddings = _Array(np.float32, (0,), doc='(n, d) ... their captions\' '
                              'embeddings ...')
  caption_rewards = _Array(np.float32, doc='(n,) ... and their rewards.')
  # The web caches (`setup.Caches`).
  dedup = _Json(doc='`DedupIndex.state()`: hashes of every image kept so far.')
  forbidden_thumbs = _Array(np.uint8, (0,), doc='(forbidden hashes, 1024) the test-leak '
                            'guard\'s pictures, written once.')
  urls = _Json(doc='`UrlCache.state()`: every URL fetched and its outcome.')
  queries = _Json(doc='`QueryCache.state()`: every query\'s results.')

  def __init__(self, side: 'SideFiles', state: ExplorerState):
    self.side, self.state = side, state

  def saved(self, field: str) -> bool:
    """Whether `field` was ever written (a file of it is named in the state)."""
    return getattr(type(self), field).key in self.state.files

  @property
  def reward_book(self) -> dict:
    """Stored rewards of every image kept so far, by sha key (query scoring 'all')."""
    return dict(zip(self.reward_keys.tolist(), self.reward_values.tolist()))

  @reward_book.setter
  def reward_book(self, book: dict) -> None:
    self.reward_keys = np.fromiter(book, np.uint64, len(book))
    self.reward_values = np.fromiter(book.values(), np.float32, len(book))


# `{field}-{save:06d}.npy|json` (`SideFiles.save_*`) and `atomic.write`'s temporaries of them.
_OURS = re.compile(r'^(\.tmp-)?[a-z_]+-\d{6}\.(npy|json)(-.*)?$')


class SideFiles:
  """Versioned files next to the checkpoints: write new, then point the state at them.

  With `write=False` (every process but 0 of a multi-process run, whose state is the same
  as process 0's) names are recorded but nothing is written or deleted.
  """

  def __init__(self, workdir: str, write: bool = True):
    self.root = os.path.join(workdir, 'explorer')
    self.write = write
    os.makedirs(self.root, exist_ok=True)

  def path(self, name: str) -> str:
    return os.path.join(self.root, name)

  def save_array(self, state: ExplorerState, key: str, array: np.ndarray) -> None:
    name = f'{key}-{state.saves:06d}.npy'
    if not self.write:
      state.files[key] = name
      return
    atomic.write(self.path(name), lambda f: np.save(f, array))
    state.files[key] = name

  def load_array(self, state: ExplorerState, key: str, default: np.ndarray) -> np.ndarray:
    if key not in state.files:
      return default
    return np.load(self.path(state.files[key]))

  def save_json(self, state: ExplorerState, key: str, data) -> None:
    name = f'{key}-{state.saves:06d}.json'
    if not self.write:
      state.files[key] = name
      return
    atomic.write(self.path(name), lambda f: f.write(json.dumps(data).encode()))
    state.files[key] = name

  def load_json(self, state: ExplorerState, key: str, default=None):
    if key not in state.files:
      return default
    with open(self.path(state.files[key]), encoding='utf-8') as f:
      return json.load(f)

  def prune(self, state: ExplorerState) -> None:
    """Deletes side files the latest checkpoint does not refer to, and stray temporaries.

    Call only after that checkpoint is committed: until then the previous checkpoint's
    files must stay.
    """
    if not self.write:
      return
    keep = set(state.files.values())
    for name in os.listdir(self.root):
      # Only names this class writes (and their atomic-write temporaries): a file someone
      # else put in the directory is never ours to delete.
      if name not in keep and _OURS.match(name):
        os.remove(self.path(name))
