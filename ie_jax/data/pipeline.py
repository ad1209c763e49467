"""Grain pipelines: target, candidates and replay mixed per iteration, to batches of views.

Elements are encoded images (bytes) or decoded uint8 arrays. Each element's geometric views
come from a random map seeded by (seed, element index), so the stream is a pure function of
the seed and a resumed iterator (`get_state` / `set_state`) continues at the same element.
Decoding and cropping run in Grain worker processes; the photometric ops run on device
(`ie_jax/data/photometric.py`).
"""
import functools
import io
import logging

import grain
import jax
import numpy as np
from absl import flags
from PIL import Image

from ie_jax.data import augment
from ie_jax.utils import collectives

log = logging.getLogger(__name__)

# Source ids in a mixture's refs.
CANDIDATES, REPLAY, TARGET = 0, 1, 2


class MixtureSource:
  """Random access over `refs` [(source id, index)] into several sources."""

  def __init__(self, sources: dict, refs: np.ndarray):
    self._sources = sources
    self._refs = np.asarray(refs, np.int64).reshape(-1, 2)
    unknown = set(np.unique(self._refs[:, 0]).tolist()) - set(sources)
    if unknown:
      raise ValueError(f'Refs name sources {sorted(unknown)}; have {sorted(sources)}.')

  def __len__(self) -> int:
    return len(self._refs)

  def __getitem__(self, i: int):
    source, index = self._refs[i]
    return self._sources[int(source)][int(index)]


def iteration_mixture(candidates, replay, target, pcr: float, replay_fraction: float,
                      seed: int) -> MixtureSource:
  """The images of one explore iteration's training: `iteration_refs` over the three
  sources (random access to the new images C, the replay buffer B and the target D)."""
  refs = iteration_refs(len(candidates), len(replay), len(target), pcr, replay_fraction, seed)
  return MixtureSource({CANDIDATES: candidates, REPLAY: replay, TARGET: target}, refs)


def iteration_refs(num_candidates: int, num_replay: int, num_target: int, pcr: float,
                   replay_fraction: float, seed: int) -> np.ndarray:
  """The paper's per-iteration mixture: all candidates + PCR * |C| old images.

  Args:
    num_candidates, num_replay, num_target: sizes of C, B and D.
    pcr: old images per candidate (2 in the paper).
    replay_fraction: share of the old images drawn from B; negative means uniform over
      B ∪ D (the paper's "from the union", our default reading).
    seed: the draw's seed (one draw per iteration; the epochs reuse it).

  Returns:
    int64 refs [(source id, index)], candidates first.
  """
  rng = np.random.default_rng(seed)
  num_old = int(round(pcr * num_candidates))
  if replay_fraction < 0:
    pool = np.concatenate([np.stack([np.full(num_replay, REPLAY), np.arange(num_replay)], 1),
                           np.stack([np.full(num_target, TARGET), np.arange(num_target)], 1)])
    old = pool[_draw(rng, len(pool), num_old)]
  else:
    from_replay = int(round(replay_fraction * num_old)) if num_replay else 0
    replay = _draw(rng, num_replay, from_replay)
    target = _draw(rng, num_target, num_old - from_replay)
    old = np.concatenate([np.stack([np.full(len(replay), REPLAY), replay], 1),
                          np.stack([np.full(len(target), TARGET), target], 1)])
  candidates = np.stack([np.full(num_candidates, CANDIDATES), np.arange(num_candidates)], 1)
  return np.concatenate([candidates, old.reshape(-1, 2)]).astype(np.int64)


def _draw(rng, population: int, count: int) -> np.ndarray:
  # Without replacement when the pool is large enough; early iterations (small buffer,
  # small target) need replacement to reach PCR * |C|.
  if count <= 0:
    return np.zeros((0,), np.int64)
  if population <= 0:
    raise ValueError(f'Cannot draw {count} images from an empty pool.')
  return rng.choice(population, count, replace=count > population).astype(np.int64)


def decode(element) -> np.ndarray:
  """bytes (JPEG/PNG/...) or an array -> uint8 RGB [H, W, 3]."""
  if isinstance(element, np.ndarray):
    return element
  with Image.open(io.BytesIO(element)) as im:
    return np.asarray(im.convert('RGB'))


class DecodeTwoViews(grain.transforms.RandomMap):
  """Decodes an image and draws its two geometric views.

  A corrupt record becomes a `{'skip': reason}` marker rather than None: Grain drops None
  elements silently, and we want them counted.
  """

  def __init__(self, image_size: int, crop_min: float):
    self.image_size = image_size
    self.crop_min = crop_min

  def random_map(self, element, rng: np.random.Generator):
    try:
      image = decode(element)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
      return {'skip': f'{type(e).__name__}: {e}'}
    return {name: augment.random_resized_crop_flip(image, rng, self.image_size, self.crop_min)
            for name in ('view1', 'view2')}


class _CountSkipped:
  """Filter predicate that counts the corrupt records it drops (in the main process)."""

  def __init__(self):
    self.skipped = 0

  def __call__(self, element) -> bool:
    if 'skip' in element:
      self.skipped += 1
      log.warning('Skipped corrupt record #%d: %s', self.skipped, element['skip'])
      return False
    return True


class _ProcessBlocks(grain.MapDataset):
  """This process's block of every global batch: elements [k b, (k + 1) b) of each run of
  `batch_size`, b = batch_size / count, so the processes' batches concatenated in process
  order are the one-process batch, element for element (and the device augmentation, keyed
  by position in the global batch, draws the same numbers). The global remainder is dropped.
  """

  def __init__(self, parent: grain.MapDataset, batch_size: int, index: int, count: int):
    super().__init__(parent)
    self._block = batch_size // count
    self._stride = batch_size
    self._offset = index * self._block
    self._len = (len(parent) // batch_size) * self._block

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, within = divmod(index, self._block)
    return self._parent[batch * self._stride + self._offset + within]


def _blank_if_skipped(element, *, image_size: int):
  if 'skip' not in element:
    return element
  log.warning('Corrupt record replaced by a black image: %s', element['skip'])
  blank = np.zeros((image_size, image_size, 3), np.uint8)
  return {'view1': blank, 'view2': blank}


def process_blocks(ds: grain.MapDataset, batch_size: int, image_size: int, index: int,
                   count: int) -> grain.MapDataset:
  """Process `index` of `count`'s block of every global batch (`collectives.Processes`)."""
  ds = _ProcessBlocks(ds, batch_size, index, count)
  # A dropped record would shift this process's batches against the others' and leave
  # them waiting in a collective: a corrupt record becomes a black image instead.
  return ds.map(functools.partial(_blank_if_skipped, image_size=image_size))


def from_config(config, source, *, epochs: int, seed: int):
  """`training_dataset` at the run's batch, view size, crop scale and workers: the one
  input pipeline every MoCo v3 phase (pretrain, warm-up, fine-tune, explore) trains on."""
  return training_dataset(source, epochs=epochs, batch_size=config.train.batch_size,
                          seed=seed, image_size=config.moco.image_size,
                          crop_min=config.moco.crop_min, num_workers=config.data.num_workers)


def training_dataset(source, *, epochs: int, batch_size: int, seed: int, image_size: int,
                     crop_min: float, num_workers: int = 0):
  """Batches of {'view1', 'view2'} uint8 for this process, `epochs` passes over `source`.

  Each epoch is a fresh permutation; every element appears exactly `epochs` times (minus
  the global remainder dropped at the end). `batch_size` is global: each process yields its
  1/process_count share. Returns (IterDataset, skip counter).
  """
  if batch_size % jax.process_count():
    raise ValueError(f'The global batch {batch_size} does not divide over '
                     f'{jax.process_count()} processes.')
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(epochs)
  # Crops are seeded by the element's global position, before it is assigned to a process.
  ds = ds.random_map(DecodeTwoViews(image_size, crop_min), seed=seed)
  ds = collectives.current().own_batches(ds, batch_size, image_size)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, 2 * num_workers),
                                            prefetch_buffer_size=4 * batch_size))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # Grain's workers read absl flags; a library caller (notebook, test) has not parsed
      # any, so take the defaults.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  counter = _CountSkipped()
  ds = ds.filter(counter).batch(batch_size // jax.process_count(), drop_remainder=True)
  return ds, counter


def steps_per_pass(num_elements: int, epochs: int, batch_size: int) -> int:
  """Optimizer steps of `training_dataset` over `epochs` passes (remainder dropped)."""
  return (num_elements * epochs) // batch_size
