"""The explorer's side of the caption GP (`gp_input='captions'`): the downloaded images it
is fitted to, kept in the explorer's side files between iterations.

`load` reads them back from the explorer's `state.Arrays`; `add` embeds the captions of an
iteration's kept images and adds them with their rewards
(`caption_gp.ImageObservations.add` keeps a uniform sample).
"""
import numpy as np

from ie_jax import reward
from ie_jax.concepts import caption_gp


def load(arrays) -> caption_gp.ImageObservations:
  keys = arrays.caption_keys
  if not keys.size:
    return caption_gp.ImageObservations()
  return caption_gp.ImageObservations(keys, arrays.caption_embeddings, arrays.caption_rewards)


def add(arrays, rows: list[dict], rewards: np.ndarray, embedder, limit: int) -> None:
  """Adds the kept `rows` (manifest rows) that have a caption. `embedder` None (processes
  other than 0, which never sample): only the file names are recorded."""
  images = caption_gp.ImageObservations()
  if embedder is not None:
    rows = [r for r in rows if str(r.get('caption') or '').strip()]
    images = load(arrays)
    if rows:
      embedded = embedder.embed([r['caption'] for r in rows], progress=False)
      images = images.add([reward.sha_key(r['sha256']) for r in rows], embedded,
                          rewards[[r['index'] for r in rows]], limit)
  arrays.caption_keys = images.keys
  arrays.caption_embeddings = (images.embeddings if images.embeddings is not None
                               else np.zeros((0, 0), np.float32))
  arrays.caption_rewards = images.rewards
