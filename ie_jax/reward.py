"""The image reward (paper Eq. 2) on device, and its aggregation into concept scores.

`knn_reward` scores images; `query_results` groups an iteration's rewards by the concept
whose query found them (the stored rewards of results an earlier query had brought
included: the "reward book", keyed by a stored image's sha256), and
`query_scores.score_queries` turns each group into the concept's score.

An image's reward is the mean cosine similarity to its k = 15 nearest target images, in the
current encoder's L2-normalised features. The similarity matrix is never materialised: the
candidates are processed in chunks (sharded over the 'data' mesh axis) and the targets are
scanned in chunks with a running top-k, so memory stays bounded at 25k x 75k and beyond.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ie_jax.concepts import query_scores
from ie_jax.data import augment, pipeline
from ie_jax.utils import sharding


def _topk_mean(queries, targets, *, k: int, target_chunk: int):
  """Mean of the top-k similarities of each query against all targets, scanned in chunks."""
  num_targets = targets.shape[0]
  pad = (-num_targets) % target_chunk
  # Padded targets get similarity -inf so they never enter the top-k.
  targets = jnp.pad(targets, ((0, pad), (0, 0)))
  valid = jnp.arange(num_targets + pad) < num_targets
  chunks = targets.reshape(-1, target_chunk, targets.shape[1])
  valid = valid.reshape(-1, target_chunk)

  def body(best, xs):
    chunk, ok = xs
    sims = jnp.where(ok[None, :], queries @ chunk.T, -jnp.inf)
    merged = jnp.concatenate([best, sims], axis=1)
    return jax.lax.top_k(merged, k)[0], None

  init = jnp.full((queries.shape[0], k), -jnp.inf, queries.dtype)
  best, _ = jax.lax.scan(body, init, (chunks, valid))
  return jnp.mean(best, axis=1)


def knn_reward(candidates, targets, *, k: int = 15, target_chunk: int = 8192):
  """Rewards [M] of L2-normalised candidate features [M, D] against target features [N, D].

  Runs under jit with whatever shardings the inputs carry (candidates split over 'data',
  targets replicated, via `make_knn_reward`).
  """
  if targets.shape[0] < k:
    raise ValueError(f'k={k} nearest targets requested, but there are only '
                     f'{targets.shape[0]} target images.')
  chunk = min(target_chunk, targets.shape[0])
  return _topk_mean(candidates.astype(jnp.float32), targets.astype(jnp.float32), k=k,
                    target_chunk=chunk)


def make_knn_reward(mesh, *, k: int = 15, target_chunk: int = 8192,
                    candidate_chunk: int = 4096):
  """A host-callable reward: numpy/jax features in, numpy rewards out.

  Candidates are fed in chunks of `candidate_chunk` (padded to the device count), each
  chunk split over the mesh; targets are replicated once.
  """
  data, repl = sharding.batch_sharded(mesh), sharding.replicated(mesh)
  fn = jax.jit(functools.partial(knn_reward, k=k, target_chunk=target_chunk),
               in_shardings=(data, repl), out_shardings=sharding.gathered(mesh))
  num_devices = mesh.devices.size

  def reward(candidates, targets) -> np.ndarray:
    targets = jax.device_put(targets, repl)
    candidates = np.asarray(candidates)
    out = []
    for start in range(0, len(candidates), candidate_chunk):
      chunk = candidates[start:start + candidate_chunk]
      pad = (-len(chunk)) % num_devices
      padded = np.pad(chunk, ((0, pad), (0, 0)))
      out.append(np.asarray(fn(jax.device_put(padded, data), targets))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
  return reward


def embed_images(source, embed_fn, mesh, *, image_size: int, batch_size: int,
                 desc: str = 'embed') -> np.ndarray:
  """Features [len(source), D] of every image of `source` (decoded, eval transform).

  Every batch is padded to `batch_size` (rounded up to the device count), so the embed
  step compiles once and each device gets an equal share of every batch. With several
  processes each decodes only its block of the batch, and `embed_fn` returns the features
  replicated (`sharding.gathered`), so every process gets them all.
  """
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  out = []
  for start in tqdm(range(0, len(source), batch_size), desc=desc, unit='batch',
                    disable=jax.process_index() > 0):
    count = min(batch_size, len(source) - start)
    batch = np.zeros((local, image_size, image_size, 3), np.uint8)
    for i in range(max(0, min(local, count - first))):
      batch[i] = augment.eval_transform(pipeline.decode(source[start + first + i]),
                                        image_size)
    feats = embed_fn(sharding.put_batch(batch, mesh))
    out.append(np.asarray(jax.device_get(feats), np.float32)[:count])
  if not out:
    return np.zeros((0, 0), np.float32)
  feats = np.concatenate(out)
  if not np.all(np.isfinite(feats)):
    raise FloatingPointError(f'{desc}: non-finite features: the encoder has diverged.')
  return feats


def sha_key(sha256: str) -> int:
  """A stored image's key in the reward book: the first 64 bits of its sha256."""
  return int(sha256[:16], 16)


def query_results(rows: list, kept: set, rewards: np.ndarray, book: dict, drawn,
                  requested: int) -> tuple[list, dict]:
  """(one `QueryResult` per drawn concept, the book entries this iteration adds).

  Args:
    rows: the iteration's manifest rows (every job's record).
    kept: store indices of the iteration's images that count (less a multi-process
      search's duplicates).
    rewards: the iteration's image rewards, by store index.
    book: sha key -> reward of every image kept in earlier iterations; updated in place
      with this iteration's.
    drawn: the iteration's vocabulary concepts (class-name queries are never observed).
    requested: images asked of the engine per query.
  """
  added = {sha_key(r['sha256']): float(rewards[r['index']]) for r in rows
           if r['status'] == 'ok' and r['index'] in kept}
  book.update(added)
  new, old = {}, {}
  for row in rows:
    concept = int(row['concept'])
    if concept < 0:  # class names: searched and trained on, never observations
      continue
    if row['status'] == 'ok' and row['index'] in kept:
      new.setdefault(concept, []).append(float(rewards[row['index']]))
    elif row.get('sha256') and sha_key(row['sha256']) in book:
      # An image an earlier query (or process) brought: it scores this query too.
      old.setdefault(concept, []).append(book[sha_key(row['sha256'])])
  return [query_scores.QueryResult(c, requested, np.asarray(new.get(c, [])),
                                   np.asarray(old.get(c, []))) for c in drawn], added
