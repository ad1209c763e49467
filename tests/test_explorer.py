"""The explore loop end to end on the tiny generated world, and kill/resume at every phase."""
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import tiny
from ie_jax import explore
from ie_jax.explore import caption_book
from ie_jax.utils import checkpoint
from ie_jax.web import shards
from ie_jax.web import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ['--config.checkpoint_every_steps=4']


def stored_images(workdir):
  store = store_lib.WebStore(os.path.join(workdir, 'web'))
  return {it: sorted(r['sha256'] for r in store.manifest(it) if r['status'] == 'ok')
          for it in store.iterations()}


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('straight'))
  config = tiny.get_config()
  config.checkpoint_every_steps = 4
  return workdir, explore.run(config, workdir)


def test_two_iterations_leave_every_artefact(straight_run):
  workdir, run = straight_run
  state = run.state
  assert (state.iteration, state.phase) == (2, 'sample')
  assert len(state.history) == 2
  listing = {d: os.listdir(os.path.join(workdir, d)) for d in os.listdir(workdir)}
  assert listing['checkpoints'], 'no checkpoint'
  assert any(f.startswith('images-00000-') for f in listing['web'])
  assert any(f.startswith('manifest-00001-') for f in listing['web'])
  assert any(f.startswith('events.out.tfevents') for f in listing['logs'])
  assert {'index.html', 'reward.png', 'knn.png', 'grids'} <= set(listing['report'])
  assert sorted(os.listdir(os.path.join(workdir, 'report', 'grids'))) == [
      'iteration-00000.png', 'iteration-00001.png']
  # The policy learned something: scored concepts, and a replay buffer from both iterations.
  assert state.observations is not None and len(state.observations['concepts']) > 0
  replay = np.load(os.path.join(workdir, 'explorer', state.files['replay']))
  assert set(replay[:, 0].tolist()) == {0, 1}
  for summary in state.history:
    assert summary['candidates'] > 0 and summary['train_steps'] > 0
    assert 0 <= summary['knn_accuracy'] <= 1
    assert 0 < summary['replay_added'] <= summary['candidates'] / 2
  # Every manifest row has a status; kept images decode.
  store = store_lib.WebStore(os.path.join(workdir, 'web'))
  rows = store.manifest(0)
  assert all(r['status'] for r in rows)
  assert store.num_images(0) == sum(r['status'] == 'ok' for r in rows)


def run_launcher(workdir, env, failpoint=None, timeout=600):
  env = dict(env)
  env.pop('IE_JAX_FAILPOINT', None)
  if failpoint:
    env['IE_JAX_FAILPOINT'] = failpoint
  return subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/tiny.py', f'--workdir={workdir}']
      + OVERRIDES, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sigkill_inside_every_phase_then_resume_gives_the_same_run(straight_run, tmp_path,
                                                                   launcher_env):
  straight_dir, straight = straight_run
  workdir = str(tmp_path / 'killed')
  kills = 0
  for phase in ('sample', 'search', 'reward', 'train', 'replay', 'update'):
    proc = run_launcher(workdir, launcher_env, failpoint=phase)
    assert proc.returncode == -9, (phase, proc.returncode, proc.stderr[-2000:])
    kills += 1
    # No temporary file outlives the resume that follows (checked at the end).
  proc = run_launcher(workdir, launcher_env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  print(f'{kills} kills, {kills} resumes')

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  resumed = ckpt.restore_meta()['explorer']
  assert (resumed['iteration'], len(resumed['history'])) == (2, 2)
  assert resumed['observations'] == straight.state.observations
  assert stored_images(workdir) == stored_images(straight_dir)
  leftovers = [f for d, _, files in os.walk(workdir) for f in files
               if f.endswith('.tmp') or f.startswith('.tmp-')]  # utils/atomic.py's
  assert not leftovers


def test_a_search_with_no_usable_images_leaves_a_resumable_state(tmp_path):
  config = tiny.get_config('iterations=1')
  config.web.min_side = 1000  # every corpus image is too small
  run = explore.run(config, str(tmp_path))
  (summary,) = run.state.history
  assert summary['candidates'] == 0 and summary['train_steps'] == 0
  assert summary['download_too_small'] == 48 and 'download_ok' not in summary
  assert run.state.observations['concepts'] == []  # nothing to learn from
  assert (run.state.iteration, run.state.phase) == (1, 'sample')


def test_a_target_smaller_than_k_fails_at_start(tmp_path):
  from ie_jax.data import target as target_lib
  with pytest.raises(target_lib.TargetError, match='fewer than the k=15 neighbours'):
    explore.run(tiny.get_config('examples=10'), str(tmp_path))


def test_label_set_mode_searches_class_names_over_a_pruned_vocabulary(tmp_path):
  from ie_jax.data import shapes
  config = tiny.get_config('iterations=1,mode=labels+learned')
  config.concepts.prune_fraction = 0.25  # 3 of the world's 12 concepts
  run = explore.run(config, str(tmp_path))
  assert len(run.vocab) == 3
  # The pruned concepts are the shapes' own names, not the distractor textures.
  assert set(run.vocab.lemmas) <= set(shapes.CLASSES), run.vocab.lemmas
  labels = [q for i, q in run.state.queries if i < 0]
  concepts = [q for i, q in run.state.queries if i >= 0]
  assert len(labels) == len(concepts) == 2  # half the queries are class names
  assert set(labels) <= set(shapes.CLASSES)
  assert all(0 <= c < 3 for c in run.state.observations['concepts'])  # labels never observed


def test_the_captions_gp_is_fitted_to_every_kept_image(tmp_path):
  """gp_input='captions': each kept image's engine caption is stored, embedded, and with
  its reward becomes a point of the GP that draws the next iteration's queries."""
  config = tiny.get_config()
  config.concepts.gp_input = 'captions'
  run = explore.run(config, str(tmp_path))
  store = shards.open_run_store(str(tmp_path))  # less the search's excluded duplicates
  kept = [r for it in store.iterations() for r in store.manifest(it) if r['status'] == 'ok']
  assert kept and all(r['caption'].strip() for r in kept)
  images = caption_book.load(run.carried)
  assert len(images) == len(kept)
  assert images.embeddings.shape == (len(kept), 384)
  np.testing.assert_allclose(np.linalg.norm(images.embeddings, axis=1), 1, atol=1e-4)
  assert np.isfinite(images.rewards).all() and images.rewards.std() > 0
  # The second iteration's draw came from the GP: not uniform over the drawable concepts.
  probs = np.load(os.path.join(str(tmp_path), 'policy', 'iteration-00001.npy'))
  assert np.ptp(probs[probs > 0]) > 0
