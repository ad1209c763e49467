"""Kill-and-resume soak: SIGKILL a real explore run at seeded random moments, resume it,
and compare the end result with an uninterrupted run (issue #9).

  python -m ie_jax.testing.soak --kills=20 --iterations=4 --workdir=/tmp/soak

Kill moments are drawn uniformly over the uninterrupted run's working time, each mapped to
(the last checkpoint before it, the time since): the resumed process is killed that long
after it passes that checkpoint, so kills land in every phase, in proportion to its length,
mid-save included, not only at the failpoints. One kill in four fires during set-up instead
(restore, store clean-up, world and index loading).

Each run is a child process forked from a forkserver that has already imported ie_jax, and
children share a persistent XLA compilation cache: a resume pays for its set-up and restore,
not for 7 s of imports and a fresh compile.
"""
import multiprocessing
import os
import random
import time

import numpy as np
# Imported by the forkserver, once, with what the explorer's set-up imports lazily (the
# tokenizer's transformers machinery: 2 s per child otherwise).
from transformers import AutoTokenizer  # pylint: disable=unused-import

from ie_jax import explore
from ie_jax.utils import checkpoint
from ie_jax.web import store as store_lib

# The names of every temporary file or directory the code writes (explorer side files,
# store parts, reports, index and world builds, Orbax saves).
TEMPORARY_MARKERS = ('.tmp', '.partial', 'orbax-checkpoint-tmp')


def _use_compilation_cache(cache_dir: str) -> None:
  if not cache_dir:  # '' compiles afresh in every child (what the test suite does)
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def _child(config, workdir: str, cache_dir: str, conn, verify: bool) -> None:
  """One process of the run: set up (resuming), say 'ready', explore to the end."""
  _use_compilation_cache(cache_dir)
  run = explore.Explorer(config, workdir)
  conn.send('ready')
  run.run()
  if verify:  # every retained checkpoint must restore, arrays included
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
    steps = ckpt.all_steps()
    for step in steps:
      ckpt.restore(run.train_state, step)
    conn.send(('restored', steps))
  conn.send('done')


def latest_save(workdir: str) -> int:
  """The newest committed checkpoint step (Orbax renames a step's directory when done)."""
  root = os.path.join(workdir, 'checkpoints')
  steps = [int(n) for n in os.listdir(root) if n.isdigit()] if os.path.isdir(root) else []
  return max(steps, default=0)


def temporary_files(workdir: str) -> list[str]:
  found = []
  for root, dirs, files in os.walk(workdir):
    found += [os.path.join(root, n) for n in dirs + files
              if any(m in n for m in TEMPORARY_MARKERS)]
  return found


def stored_images(workdir: str) -> dict[int, list[str]]:
  """iteration -> sorted sha256 of every stored image (duplicates kept, to be counted)."""
  store = store_lib.WebStore(os.path.join(workdir, 'web'))
  return {it: sorted(r['sha256'] for r in store.manifest(it) if r['status'] == 'ok')
          for it in store.iterations()}


def final_state(workdir: str) -> dict:
  """The latest checkpoint's explorer state, plus its replay buffer as a list of pairs."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  state = ckpt.restore_meta()['explorer']
  replay = np.load(os.path.join(workdir, 'explorer', state['files']['replay']))
  return {**state, 'replay': replay.tolist()}


class _Runner:
  """Starts child runs from one forkserver."""

  def __init__(self, config, cache_dir: str):
    self._ctx = multiprocessing.get_context('forkserver')
    self._ctx.set_forkserver_preload(['ie_jax.testing.soak'])
    self._config = config
    self._cache_dir = cache_dir

  def start(self, workdir: str, verify: bool = False):
    parent, child = self._ctx.Pipe()
    proc = self._ctx.Process(target=_child, args=(self._config, workdir, self._cache_dir,
                                                  child, verify), daemon=True)
    proc.start()
    child.close()
    return proc, parent


def _finish(proc, conn, timeout_s: float) -> list:
  """Waits for a child to exit; returns what it sent. Raises if it failed."""
  messages = []
  deadline = time.monotonic() + timeout_s
  try:
    while time.monotonic() < deadline:
      if conn.poll(0.1):
        messages.append(conn.recv())
      elif not proc.is_alive():
        while conn.poll():  # what it sent between the last poll and its exit
          messages.append(conn.recv())
        break
  except EOFError:  # the child exited and closed its end
    pass
  proc.join(max(0.0, deadline - time.monotonic()))
  if proc.exitcode != 0:
    if proc.is_alive():
      proc.kill()
    raise RuntimeError(f'A soak run exited with {proc.exitcode} (messages: {messages}).')
  return messages


def soak(config, workdir: str, straight_dir: str, cache_dir: str, *, kills: int = 20,
         seed: int = 0, timeout_s: float = 600) -> dict:
  """Runs `config` uninterrupted in `straight_dir`, then killed `kills` times in `workdir`.

  Returns:
    Counts and both runs' end states: 'kills', 'resumes', 'kills_during_setup', 'saves',
    'straight' and 'resumed' (`final_state`), 'straight_images' and 'resumed_images'
    (`stored_images`), 'restored_steps', 'temporary_files', and timings: 'seconds',
    'straight_seconds' and 'setup_seconds' (of the last resume).
  """
  start = time.monotonic()
  runner = _Runner(config, cache_dir)
  proc, conn = runner.start(straight_dir)
  if not conn.poll(timeout_s):
    raise RuntimeError('The uninterrupted run did not finish setting up.')
  # Its timeline: when (after set-up) each checkpoint appeared.
  t0, timeline = time.monotonic(), {}
  while proc.is_alive():
    timeline.setdefault(latest_save(straight_dir), time.monotonic() - t0)
    time.sleep(0.01)
  _finish(proc, conn, timeout_s)
  saves = latest_save(straight_dir)
  marks = sorted((t, step) for step, t in timeline.items() if step < saves - 1)
  end = timeline.get(saves - 1, time.monotonic() - t0)  # the last save before the final one
  straight_s = time.monotonic() - t0

  rng = random.Random(seed)
  # Kill moments uniform over the straight run's working time, as (save reached, delay
  # after it): kills land in phases in proportion to how long they take.
  moments = sorted(rng.uniform(0.0, end) for _ in range(kills))
  done_kills, during_setup = 0, 0
  for moment in moments:
    since, target = max((m for m in marks if m[0] <= moment), default=(0.0, 0))
    proc, conn = runner.start(workdir)
    if rng.random() < 0.25:  # during set-up, before the child says 'ready'
      conn.poll(rng.uniform(0.0, 3.0))
      during_setup += not conn.poll()
    else:
      if not conn.poll(timeout_s):
        raise RuntimeError('A resumed run did not finish setting up.')
      while latest_save(workdir) < target and proc.is_alive():
        time.sleep(0.01)
      # The straight run's phases include its compiles, so a resumed one can be much
      # faster: never let it get past the next checkpoint (nor so to the end of the run).
      deadline = time.monotonic() + (moment - since)
      while (time.monotonic() < deadline and latest_save(workdir) <= target
             and proc.is_alive()):
        time.sleep(0.01)
    if not proc.is_alive():
      raise RuntimeError(f'The run ended (exit {proc.exitcode}) before kill {done_kills + 1} '
                         f'(after save {target} of {saves}).')
    proc.kill()
    proc.join()
    done_kills += proc.exitcode == -9
  setup_s = time.monotonic()
  proc, conn = runner.start(workdir, verify=True)
  conn.poll(timeout_s)
  setup_s = time.monotonic() - setup_s
  messages = _finish(proc, conn, timeout_s)
  restored = next(m[1] for m in messages if isinstance(m, tuple) and m[0] == 'restored')
  return {'kills': done_kills, 'resumes': len(moments), 'kills_during_setup': during_setup,
          'saves': saves, 'straight': final_state(straight_dir),
          'resumed': final_state(workdir), 'straight_images': stored_images(straight_dir),
          'resumed_images': stored_images(workdir), 'restored_steps': restored,
          'temporary_files': temporary_files(workdir), 'seconds': time.monotonic() - start,
          'straight_seconds': straight_s, 'setup_seconds': setup_s}


def lost_and_duplicated(straight: dict, resumed: dict) -> tuple[int, int]:
  """(stored images of the straight run missing after resuming, extra copies after it)."""
  lost = duplicated = 0
  for it in set(straight) | set(resumed):
    a, b = straight.get(it, []), resumed.get(it, [])
    lost += len(set(a) - set(b))
    duplicated += len(b) - len(set(b)) + len(set(b) - set(a))
  return lost, duplicated


def main():
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--kills', type=int, default=20)
  parser.add_argument('--iterations', type=int, default=4)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  sys.path.insert(0, os.getcwd())  # configs/ lives at the repository root
  from configs import tiny  # pylint: disable=g-import-not-at-top
  # This module's own name, not __main__: the forkserver children import it by name.
  from ie_jax.testing import soak as lib  # pylint: disable=g-import-not-at-top
  config = lib.soak_config(tiny, args.iterations)
  out = lib.soak(config, os.path.join(args.workdir, 'killed'),
             os.path.join(args.workdir, 'straight'), os.path.join(args.workdir, 'xla-cache'),
             kills=args.kills, seed=args.seed)
  print(lib.summary_line(out))


def soak_config(tiny, iterations: int):
  """configs/tiny.py at its smallest: 32 target images, no k-NN monitoring, checkpoints
  every 2 train steps (more mid-phase saves to die between)."""
  config = tiny.get_config(f'iterations={iterations},examples=32')
  config.monitor.knn_examples = 0
  config.checkpoint_every_steps = 2
  return config


def summary_line(out: dict) -> str:
  lost, duplicated = lost_and_duplicated(out['straight_images'], out['resumed_images'])
  return (f"{out['kills']} kills ({out['kills_during_setup']} during set-up), "
          f"{out['resumes']} resumes, {lost} lost, {duplicated} duplicated; "
          f"{len(out['restored_steps'])} retained checkpoints restored, "
          f"{len(out['temporary_files'])} temporary files left; {out['saves']} saves per run; "
          f"{out['seconds']:.0f} s in all (uninterrupted run {out['straight_seconds']:.0f} s "
          f"after set-up, a resume's set-up {out['setup_seconds']:.1f} s)")


if __name__ == '__main__':
  main()
