"""The paper targets' data path, real end to end and offline: a registered TFDS builder
(tests/tfds_builders/tiny_flowers.py) prepared as ArrayRecord, then read through
`ie_jax.data.target` by the function that reads oxford_flowers102, with no download at run
time. TFDS imports `importlib_resources` for every registered builder; this fails without it."""
import os
import sys

import numpy as np
import pytest

from ie_jax.data import target as target_lib
from configs import common

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tfds_builders import tiny_flowers  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture
def tiny_target(tmp_path, monkeypatch):
  builder = tiny_flowers.TinyFlowers(data_dir=str(tmp_path), file_format='array_record')
  builder.download_and_prepare()
  monkeypatch.setitem(target_lib.TFDS_TARGETS, 'tiny_flowers',
                      ('tiny_flowers', {'train': ('train',), 'test': ('test',)}, 'label',
                       False))
  monkeypatch.setitem(target_lib.LOADERS, 'tiny_flowers',
                      lambda cfg, split: target_lib._load_tfds('tiny_flowers', cfg, split))  # pylint: disable=protected-access
  config = common.get_base_config().target
  config.name, config.data_dir = 'tiny_flowers', str(tmp_path)
  return config


def test_prepared_builder_reads_as_a_target(tiny_target):
  train = target_lib.load(tiny_target, 'train')
  test = target_lib.load(tiny_target, 'test')
  assert (len(train.source), len(test.source)) == (12, 6)
  assert list(train.class_names) == list(tiny_flowers.CLASSES)
  # TFDS shuffles on preparing: each image must come back with its own label.
  rng = np.random.RandomState(0)
  made = {rng.randint(0, 256, (16, 16, 3), np.uint8).tobytes(): i % 3 for i in range(12)}
  labels = train.labels()
  got = {np.asarray(train.source[i]).tobytes(): int(labels[i]) for i in range(12)}
  assert got == made


def test_unprepared_dataset_is_not_downloaded_and_says_how(tiny_target, tmp_path):
  tiny_target.data_dir = str(tmp_path / 'empty')
  with pytest.raises(target_lib.TargetError, match='tfds build tiny_flowers') as e:
    target_lib.load(tiny_target, 'train')
  assert 'config.target.download=True' in str(e.value)
  assert not os.path.exists(tmp_path / 'empty' / 'tiny_flowers')  # nothing fetched or built
