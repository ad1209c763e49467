"""Weighted k-NN classification on L2-normalised features (InstDisc / DINO protocol).

Each test image votes with its k = 20 most cosine-similar training images; neighbour j adds
exp(s_j / T), T = 0.07, to the score of its class (for multi-label targets, to every class it
carries). The prediction is the class with the largest score. Wu et al. 2018 (InstDisc)
introduced this rule and DINO's `eval_knn` uses the same values; the paper leaves its k-NN
protocol unspecified, so we take the standard one.

The similarity matrix is never materialised whole: queries go through in chunks (each
split over the 'data' mesh axis) against the replicated training features.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ie_jax.utils import sharding

K = 20
TEMPERATURE = 0.07


def _vote(queries, bank, bank_targets, *, k: int, temperature: float):
  """Class scores [M, C] of `queries` [M, D] from `bank` [N, D] with targets [N, C]."""
  sims = queries @ bank.T
  top_sims, top_idx = jax.lax.top_k(sims, k)
  weights = jnp.exp(top_sims / temperature)
  # [M, k, C] one-hot (or multi-hot) rows of the neighbours, weighted and summed over k.
  return jnp.einsum('mk,mkc->mc', weights, bank_targets[top_idx]), top_idx


def make_knn(mesh, *, k: int = K, temperature: float = TEMPERATURE, chunk: int = 1024):
  """A host-callable k-NN: `(bank, bank_targets, queries) -> (scores [M, C], neighbours [M, k])`.

  Args:
    mesh: the ('data',) mesh; queries are split over it, the bank is replicated.
    k: neighbours per query.
    temperature: T in the vote weight exp(similarity / T).
    chunk: queries per device call; memory is about chunk x len(bank) floats.

  Returns:
    A function of float arrays `bank` [N, D], `bank_targets` [N, C] (one-hot or multi-hot)
    and `queries` [M, D], all L2-normalised features, returning numpy arrays.
  """
  data, repl = sharding.batch_sharded(mesh), sharding.replicated(mesh)
  fn = jax.jit(functools.partial(_vote, k=k, temperature=temperature),
               in_shardings=(data, repl, repl),
               out_shardings=(sharding.gathered(mesh), sharding.gathered(mesh)))
  num_devices = mesh.devices.size
  # Every call has the same shape (the last chunk is padded), so fn compiles once.
  chunk = -(-chunk // num_devices) * num_devices

  def knn(bank, bank_targets, queries):
    if len(bank) < k:
      raise ValueError(f'k={k} neighbours requested, but the training set has only '
                       f'{len(bank)} images.')
    bank = jax.device_put(np.asarray(bank, np.float32), repl)
    bank_targets = jax.device_put(np.asarray(bank_targets, np.float32), repl)
    queries = np.asarray(queries, np.float32)
    size = min(chunk, -(-len(queries) // num_devices) * num_devices)
    scores, neighbours = [], []
    for start in range(0, len(queries), size):
      part = queries[start:start + size]
      padded = np.pad(part, ((0, size - len(part)), (0, 0)))
      s, n = fn(jax.device_put(padded, data), bank, bank_targets)
      scores.append(np.asarray(s)[:len(part)])
      neighbours.append(np.asarray(n)[:len(part)])
    return np.concatenate(scores), np.concatenate(neighbours)
  return knn


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Int labels [N] -> float one-hot [N, C]; multi-hot [N, C] passes through."""
  labels = np.asarray(labels)
  if labels.ndim == 2:
    return labels.astype(np.float32)
  return np.eye(num_classes, dtype=np.float32)[labels]
