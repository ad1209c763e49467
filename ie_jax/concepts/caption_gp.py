"""The GP fitted to downloaded images (`gp_input='captions'`, docs/DECISIONS.md, "The GP
fitted to captions"): the images it is fitted to, and its per-concept scores.

Each downloaded image is one point: the embedding of the caption the engine gave with it,
and its reward. The GP predicts mu + sigma at each concept's query embedding; the policy's
softmax, tiers and draws (`policy.py`) are unchanged.
"""
import dataclasses

import numpy as np

from ie_jax.concepts import gpr


def _mix64(keys: np.ndarray) -> np.ndarray:
  """A fixed bijective scramble of uint64 keys (splitmix64's finaliser): sorting by it is
  a uniform random order that does not depend on the order images arrived in."""
  with np.errstate(over='ignore'):
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclasses.dataclass(frozen=True, eq=False)
class ImageObservations:
  """Downloaded images as the 'captions' GP sees them; immutable.

  Attributes:
    keys: (n,) uint64, one per image (its sha256 prefix), unique.
    embeddings: (n, d) float32 unit embeddings of the images' captions.
    rewards: (n,) float32 image rewards.
  """
  keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.uint64))
  embeddings: np.ndarray | None = None
  rewards: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))

  def __len__(self) -> int:
    return int(self.keys.size)

  def add(self, keys, embeddings, rewards, limit: int) -> 'ImageObservations':
    """These images added, keeping at most `limit`: those whose scrambled key is lowest,
    i.e. a uniform sample of every image seen so far, the same whatever order they came
    in. Repeated keys, non-finite rewards and zero embeddings (no caption) are dropped."""
    keys = np.asarray(keys, np.uint64).ravel()
    embeddings = np.asarray(embeddings, np.float32).reshape(len(keys), -1)
    rewards = np.asarray(rewards, np.float32).ravel()
    if not len(keys) == len(rewards):
      raise ValueError(f'{len(keys)} keys but {len(rewards)} rewards.')
    keep = np.isfinite(rewards) & (np.abs(embeddings).sum(axis=1) > 0)
    keep &= ~np.isin(keys, self.keys)
    keys, embeddings, rewards = keys[keep], embeddings[keep], rewards[keep]
    _, first = np.unique(keys, return_index=True)
    keys, embeddings, rewards = keys[first], embeddings[first], rewards[first]
    if self.embeddings is not None and len(self):
      keys = np.concatenate([self.keys, keys])
      embeddings = np.concatenate([self.embeddings, embeddings])
      rewards = np.concatenate([self.rewards, rewards])
    order = np.sort(np.argsort(_mix64(keys), kind='stable')[:limit])
    return ImageObservations(keys[order], embeddings[order], rewards[order])


def caption_scores(query_embeddings, images: ImageObservations, *, length_scale: float = 1.0,
                   alpha: float = 1e-2, normalize_y: bool = True,
                   chunk_size: int = 8192) -> np.ndarray:
  """Per-concept score with `gp_points='captions'`: the GP fitted to the images (caption
  embedding -> reward) predicts mu + sigma at every concept's query embedding, searched or
  not (its own images are among the points, so a searched concept's prediction says what
  its query found).

  Args:
    query_embeddings: (N, d) unit embeddings of each concept's query text.
    images: at least one image, embedded by the same text model.
  """
  if not len(images):
    raise ValueError('caption_scores needs at least one image observation.')
  fit = gpr.gpr_fit(images.embeddings, images.rewards.astype(np.float64),
                    length_scale=length_scale, alpha=alpha, normalize_y=normalize_y)
  mean, std = gpr.gpr_predict(fit, np.asarray(query_embeddings), chunk_size=chunk_size)
  return np.asarray(mean, np.float64) + np.asarray(std, np.float64)
