"""The explorer's side of the caption GP (`gp_input='captions'`): the downloaded images it
is fitted to, kept in the explorer's side files between iterations.

`load` reads them back from the explorer's `state.Carried`; `add` embeds the captions of an
iteration's kept images and adds them with their rewards
(`caption_gp.ImageObservations.add` keeps a uniform sample).
"""
import numpy as np

from ie_jax import reward
from ie_jax.concepts import caption_gp


def load(carried) -> caption_gp.ImageObservations:
  keys = carried.caption_keys
  if not keys.size:
    return caption_gp.ImageObservations()
  return caption_gp.ImageObservations(keys, carried.caption_embeddings, carried.caption_rewards)


def add(carried, rows: list[dict], rewards: np.ndarray, embedder, limit: int) -> None:
  """Adds the kept `rows` (manifest rows) that have a caption. `embedder` None (processes
  other than 0, which never sample): only the file names are recorded."""
  images = caption_gp.ImageObservations()
  if embedder is not None:
    rows = [r for r in rows if str(r.get('caption') or '').strip()]
    images = load(carried)
    if rows:
      embedded = embedder.embed([r['caption'] for r in rows], progress=False)
      images = images.add([reward.sha_key(r['sha256']) for r in rows], embedded,
                          rewards[[r['index'] for r in rows]], limit)
  carried.caption_keys = images.keys
  carried.caption_embeddings = (images.embeddings if images.embeddings is not None
                               else np.zeros((0, 0), np.float32))
  carried.caption_rewards = images.rewards
