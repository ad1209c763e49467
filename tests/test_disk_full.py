"""A disk that fills up mid-run (issue #6): a clear error, nothing corrupted, and once space
is back the resumed run equals an uninterrupted one.

The full disk is an injected OSError(ENOSPC) at the real write calls (`failpoints`), so
the test runs anywhere; the store and checkpoint writers are also run against a real full
tmpfs when this machine lets the test mount one.
"""
import errno
import os
import subprocess

import numpy as np
import pytest

from configs import tiny
from ie_jax import explore
from ie_jax.testing import soak
from ie_jax.utils import checkpoint, disk, failpoints
from ie_jax.web import store as store_lib


def small_config():
  config = tiny.get_config('iterations=1,examples=32')
  config.monitor.knn_examples = 0
  return config


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('straight'))
  explore.run(small_config(), workdir)
  return workdir, soak.final_state(workdir)


# 'store@30': the 30th image written, in the run's second store part; 'checkpoint@3': the
# save after 'search' (saves 1 and 2 are the start and 'sample').
@pytest.mark.parametrize('point', ['store@30', 'checkpoint@3'])
def test_a_full_disk_stops_with_advice_and_the_resumed_run_matches(straight, point, tmp_path,
                                                                  monkeypatch):
  straight_dir, expected = straight
  workdir = str(tmp_path / 'run')
  failpoints.reset()
  monkeypatch.setenv(failpoints.DISK_FULL_ENV, point)
  run = explore.Explorer(small_config(), workdir)
  with pytest.raises(disk.DiskFullError) as info:
    run.run()
  message = str(info.value)
  assert info.value.errno == errno.ENOSPC
  where = {'store': os.path.join(workdir, 'web', 'images-00000-'),
           'checkpoint': os.path.join(workdir, 'checkpoints', '3')}[point.split('@')[0]]
  assert where in info.value.filename and where in message, message
  assert 'run the same command again' in message and 'resume from checkpoint' in message
  # Nothing half-written is left, and every checkpoint on disk restores, arrays included.
  assert soak.temporary_files(workdir) == []
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  steps = ckpt.all_steps()
  assert max(steps) == 2  # the start and 'sample'; both failures come later
  for step in steps:
    ckpt.restore(run.train_state, step)

  monkeypatch.delenv(failpoints.DISK_FULL_ENV)  # space is back
  explore.run(small_config(), workdir)
  resumed = soak.final_state(workdir)
  assert resumed['observations'] == expected['observations']
  assert resumed['replay'] == expected['replay']
  assert soak.stored_images(workdir) == soak.stored_images(straight_dir)
  assert soak.temporary_files(workdir) == []


def _tmpfs(path, size: str) -> bool:
  os.makedirs(path, exist_ok=True)
  try:
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                          capture_output=True, check=False, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
  path = tmp_path / 'small'
  if not _tmpfs(path, '1m'):
    pytest.skip('cannot mount a tmpfs here (needs root); the injected ENOSPC tests cover it')
  yield str(path)
  subprocess.run(['umount', str(path)], check=False)


def test_store_on_a_really_full_disk_reports_the_part_and_keeps_nothing(full_disk):
  # ArrayRecord buffers: the failure surfaces at commit, as a RuntimeError, not an OSError.
  store = store_lib.WebStore(os.path.join(full_disk, 'web'))
  with store.writer(0) as part:
    part.add(b'jpeg', {'url': 'a'})
  writer = store.writer(0)
  rng = np.random.default_rng(0)
  for i in range(40):
    writer.add(rng.bytes(50_000), {'url': f'u{i}'})
  with pytest.raises(disk.DiskFullError, match='images-00000-001.array_record.tmp'):
    writer.commit()
  assert sorted(os.listdir(store.root)) == ['images-00000-000.array_record',
                                            'manifest-00000-000.jsonl']
  assert store.num_images(0) == 1 and store.read(0, 0) == b'jpeg'


def test_checkpoint_on_a_really_full_disk_keeps_the_previous_one(full_disk):
  ckpt = checkpoint.Checkpointer(os.path.join(full_disk, 'ckpt'))
  ckpt.save(1, {'w': np.ones((4,), np.float32)}, {'step': 1})
  big = {'w': np.random.default_rng(0).normal(size=(1000, 1000)).astype(np.float32)}
  with pytest.raises(disk.DiskFullError, match='ckpt/2'):
    ckpt.save(2, big, {'step': 2})
  assert os.listdir(ckpt.directory) == ['1']  # the partial step 2 is gone
  assert ckpt.restore({'w': np.zeros((4,), np.float32)})[1] == {'step': 1}
  ckpt.save(2, {'w': np.full((4,), 2, np.float32)}, {'step': 2})  # space again
  assert ckpt.all_steps() == [1, 2]
