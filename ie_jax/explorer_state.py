"""The explorer's resumable state: where the loop is, and what it has learned.

Small values live in the checkpoint's JSON `meta`; growing ones (the replay buffer, the
caches) live in files under `workdir/explorer/` whose names the state records. Each such
file is written under a new name (tagged with the save counter) before the checkpoint that
names it, so a checkpoint never points at a file written after it.
"""
import dataclasses
import json
import os

import numpy as np

from ie_jax.utils import atomic

@dataclasses.dataclass
class ExplorerState:
  """Everything needed to resume the loop, except the TrainState.

  Attributes:
    iteration: the iteration in progress (0-based).
    phase: the next phase to run in it (one of `explorer.Explorer.PHASES`).
    saves: checkpoints written so far (= the Orbax step of the latest).
    queries: this iteration's [(concept index, query string)], set by 'sample'.
    observations: the policy's history (`policy.Observations.to_state()`).
    files: name -> file under workdir/explorer/ (replay refs, caches, rewards).
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

  def advance(self, phases: tuple[str, ...]) -> None:
    """Moves to the next of `phases` (and to the next iteration after the last)."""
    i = phases.index(self.phase)
    if i + 1 < len(phases):
      self.phase = phases[i + 1]
    else:
      self.phase, self.iteration = phases[0], self.iteration + 1


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
      if name not in keep:  # stray temporaries ('.tmp-*') included
        os.remove(self.path(name))
