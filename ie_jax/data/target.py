"""Target datasets: the paper's TFDS targets, local folders, and a generated set.

`load(target_config, split)` returns a `Target`: a random-access `source` of images (uint8
arrays or encoded bytes; `pipeline.decode` takes both), the class names, and labels read on
demand (only probes need them, and reading them decodes every image).

TFDS targets go through `tfds.data_source` (ArrayRecord, no TensorFlow at run time). They
must be prepared beforehand; nothing is downloaded at run time.
"""
import dataclasses
import os
from typing import Any, Callable

import numpy as np

from ie_jax.data import shapes


class TargetError(ValueError):
  """The configured target cannot be loaded; the message says what was expected."""


@dataclasses.dataclass
class Target:
  name: str
  split: str
  source: Any                 # len() and [i] -> image (uint8 HWC array or encoded bytes)
  class_names: list
  multi_label: bool
  _labels: Callable           # () -> int labels [N], or multi-hot [N, C] if multi_label

  def labels(self) -> np.ndarray:
    return self._labels()


# name -> (TFDS name, our split -> TFDS split, label feature, multi-label)
TFDS_TARGETS = {
    # Flowers trains on train+validation (2,040 images), as the paper counts it.
    'oxford_flowers102': ('oxford_flowers102', {'train': ('train', 'validation'),
                                                'test': ('test',)}, 'label', False),
    'oxford_iiit_pet': ('oxford_iiit_pet', {'train': ('train',), 'test': ('test',)},
                        'label', False),
    # Food-101's clean 250-per-class set is TFDS's 'validation'; it serves as the test split.
    'food101': ('food101', {'train': ('train',), 'test': ('validation',)}, 'label', False),
    'voc2007': ('voc/2007', {'train': ('train', 'validation'), 'test': ('test',)},
                'labels', True),
}
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff')


class _Concat:
  """Several TFDS split sources as one (e.g. Flowers' train + validation)."""

  def __init__(self, sources):
    self._sources = sources
    self._offsets = np.cumsum([0] + [len(s) for s in sources])

  def __len__(self):
    return int(self._offsets[-1])

  def __getitem__(self, i):
    if not 0 <= i < len(self):
      raise IndexError(i)
    part = int(np.searchsorted(self._offsets, i, side='right') - 1)
    return self._sources[part][int(i - self._offsets[part])]


class _TfdsImages:
  """The 'image' feature of a TFDS data source."""

  def __init__(self, source):
    self._source = source

  def __len__(self):
    return len(self._source)

  def __getitem__(self, i):
    return self._source[i]['image']


class _Files:
  """Encoded image bytes read from a list of files."""

  def __init__(self, paths):
    self.paths = list(paths)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    with open(self.paths[i], 'rb') as f:
      return f.read()


def _load_tfds(name: str, cfg, split: str) -> Target:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_name, splits, label_key, multi = TFDS_TARGETS[name]
  data_dir = cfg.data_dir or None
  try:
    # No download at run time unless asked: TFDS's default would start fetching (and
    # preparing, with TensorFlow) an unprepared dataset in the middle of a run.
    source = _Concat([tfds.data_source(tfds_name, split=s, data_dir=data_dir,
                                       download=bool(cfg.get('download', False)))
                      for s in splits[split]])
    feature = tfds.builder(tfds_name, data_dir=data_dir).info.features[label_key]
  except Exception as e:  # TFDS raises several types for "not prepared"
    raise TargetError(
        f'Cannot read TFDS dataset {tfds_name!r} (splits {splits[split]}) from '
        f'{data_dir or "the default TFDS data dir"}: {type(e).__name__}: {e}. Prepare it '
        f'once with `tfds build {tfds_name} --file_format=array_record` (data_dir via '
        '--config.target.data_dir or TFDS_DATA_DIR; see the README for what each paper '
        'target needs), or let TFDS download and prepare it at run time with '
        '--config.target.download=True.') from e
  names = list((feature.feature if multi else feature).names)

  def labels():
    if multi:
      out = np.zeros((len(source), len(names)), np.int32)
      for i in range(len(source)):
        out[i, np.unique(np.asarray(source[i][label_key], np.int64))] = 1
      return out
    return np.asarray([source[i][label_key] for i in range(len(source))], np.int64)
  return Target(name, split, _TfdsImages(source), names, multi, labels)


def _load_folder(cfg, split: str) -> Target:
  """`data_dir/<split>/<class>/*.jpg`, or `data_dir/<split>.txt` lines "path label"."""
  root = cfg.data_dir
  if not root:
    raise TargetError("A 'folder' target needs --config.target.data_dir.")
  listing = os.path.join(root, f'{split}.txt')
  if os.path.isfile(listing):
    paths, label_names = [], []
    with open(listing, encoding='utf-8') as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        path, _, label = line.strip().rpartition(' ')
        if not path:
          raise TargetError(f'{listing}:{line_no}: expected "<path> <label>", got {line!r}.')
        paths.append(path if os.path.isabs(path) else os.path.join(root, path))
        label_names.append(label)
  else:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      raise TargetError(f'Folder target: expected {listing} or class folders under '
                        f'{split_dir}; found neither.')
    paths, label_names = [], []
    for cls in sorted(os.listdir(split_dir)):
      cls_dir = os.path.join(split_dir, cls)
      if os.path.isdir(cls_dir):
        for fname in sorted(os.listdir(cls_dir)):
          if fname.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(os.path.join(cls_dir, fname))
            label_names.append(cls)
  if not paths:
    raise TargetError(f'Folder target {root!r} split {split!r} has no images '
                      f'(looked for {IMAGE_EXTENSIONS}).')
  names = sorted(set(label_names))
  index = {n: i for i, n in enumerate(names)}
  labels = np.asarray([index[n] for n in label_names], np.int64)
  return Target('folder', split, _Files(paths), names, False, lambda: labels)


def _load_shapes(cfg, split: str) -> Target:
  # Generated: the split picks the seed, so train and test never share images.
  images, labels = shapes.generate(cfg.num_examples or 1024, cfg.image_size,
                                   {'train': 0, 'test': 1}[split])
  # A NumPy array already is a random-access source (len, [i]).
  return Target('shapes', split, images, list(shapes.CLASSES), False, lambda: labels)


LOADERS = {
    **{name: (lambda cfg, split, name=name: _load_tfds(name, cfg, split))
       for name in TFDS_TARGETS},
    'folder': _load_folder,
    'shapes': _load_shapes,
}


def load(target_config, split: str | None = None) -> Target:
  """Loads `target_config.name` at `split` (default `target_config.split`)."""
  split = split or target_config.split
  if target_config.name not in LOADERS:
    raise TargetError(f'Unknown target {target_config.name!r}; valid: {sorted(LOADERS)}.')
  if split not in ('train', 'test'):
    raise TargetError(f"The split must be 'train' or 'test', got {split!r}.")
  target = LOADERS[target_config.name](target_config, split)
  if target_config.num_examples and len(target.source) > target_config.num_examples:
    target = _first(target, target_config.num_examples)
  return target


class Head:
  """The first `n` items of a random-access source."""

  def __init__(self, source, n):
    self._source, self._n = source, n

  def __len__(self):
    return self._n

  def __getitem__(self, i):
    if not 0 <= i < self._n:
      raise IndexError(i)
    return self._source[i]


def _first(target: Target, n: int) -> Target:
  labels = target._labels  # pylint: disable=protected-access
  return dataclasses.replace(target, source=Head(target.source, n),
                             _labels=lambda: labels()[:n])
