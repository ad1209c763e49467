"""Drawing an iteration's queries from the policy's distribution (`policy.distribution`).

* `sample_concepts`: concepts by probability, with or without replacement; without, no two
  concepts of one query text in a draw (`policy.Searched.queries`);
* `sample_queries`: the split between class names and concepts per mode
  (`policy.LABEL_FRACTION`; class names round-robin in a seeded order);
* `query_list`: a draw as `[[id, query text]]` (class names -1, -2, ...; descriptors);
* `distribution_summary`: what the logs and the report say about the distribution drawn
  from.
"""
import dataclasses

import numpy as np

from ie_jax.concepts.policy import LABEL_FRACTION


def sample_concepts(probs, n: int, *, seed: int, replace: bool = False,
                    groups=None) -> np.ndarray:
  """`n` concept indices drawn from `probs` by a NumPy generator seeded with `seed`.

  Without replacement, `n` must not exceed the vocabulary. `groups` (each concept's query
  id, `Searched.queries`), without replacement: no two concepts of one query in a draw,
  since the second would search what the first did. That draw is the same sequential
  draw without replacement, done as Gumbel top-k.
  """
  probs = np.asarray(probs, dtype=np.float64)
  if not replace and n > probs.size:
    raise ValueError(f'Cannot draw {n} distinct concepts from {probs.size}.')
  drawable = np.count_nonzero(probs)
  if not replace and n > drawable:
    # Fewer drawable concepts than queries (searched concepts have none): after all of
    # them, the rest are redraws, uniformly.
    probs = np.where(probs > 0, probs, probs[probs > 0].min() * 1e-9 if drawable else 1.0)
  rng = np.random.default_rng(seed)
  if groups is None or replace:
    return rng.choice(probs.size, size=n, replace=replace, p=probs / probs.sum())
  with np.errstate(divide='ignore'):
    keys = np.log(probs) + rng.gumbel(size=probs.size)
  order = np.argsort(-keys, kind='stable')
  _, first = np.unique(np.asarray(groups)[order], return_index=True)
  picked = order[np.sort(first)]  # the best-keyed concept of each query, in key order
  if picked.size < n:  # fewer distinct queries than draws: the rest repeat queries
    picked = np.concatenate([picked, np.setdiff1d(order, picked, assume_unique=True)])
  return picked[:n]


@dataclasses.dataclass(frozen=True, eq=False)
class Queries:
  """One iteration's queries: vocabulary concepts and class names (by index)."""
  concepts: np.ndarray  # (n_concepts,) indices into the (pruned) vocabulary
  labels: np.ndarray    # (n_labels,) indices into the class-name list


def sample_queries(probs, n: int, *, mode: str, num_labels: int = 0, seed: int,
                   replace: bool = False, groups=None) -> Queries:
  """Splits `n` queries between class names and concepts per `LABEL_FRACTION[mode]`.

  Class names go round-robin in a seeded random order, so every name is searched once
  before any is repeated; concepts come from `sample_concepts`.
  """
  if mode not in LABEL_FRACTION:
    raise ValueError(f'Unknown policy mode {mode!r}; valid: {sorted(LABEL_FRACTION)}.')
  n_labels = int(round(n * LABEL_FRACTION[mode]))
  if n_labels and num_labels < 1:
    raise ValueError(f'Mode {mode!r} needs class names (num_labels >= 1).')
  rng = np.random.default_rng(seed)
  rounds = [rng.permutation(num_labels) for _ in range(-(-n_labels // max(num_labels, 1)))]
  labels = np.concatenate(rounds)[:n_labels] if rounds else np.zeros((0,), np.int64)
  concepts = sample_concepts(probs, n - n_labels, seed=int(rng.integers(2**31)),
                             replace=replace, groups=groups)
  return Queries(concepts=concepts.astype(np.int64), labels=labels.astype(np.int64))


def query_list(drawn: Queries, lemmas, class_names, *, descriptors=None,
               seed: int = 0) -> list[list]:
  """`[[id, query text]]` of a draw, concepts first.

  A concept's id is its vocabulary index; class names get -1, -2, ...: they are searched
  and trained on, but never observed by the GP. With a descriptor sampler ("Ours++",
  `descriptors.DescriptorSampler`), every query text gets a fresh descriptor, seeded by
  `seed`.
  """
  ids = [int(c) for c in drawn.concepts] + [-1 - int(l) for l in drawn.labels]
  names = ([lemmas[c] for c in drawn.concepts] +
           [class_names[l] for l in drawn.labels])
  if descriptors is not None:
    names = descriptors.queries(names, seed=seed)
  return [[i, q] for i, q in zip(ids, names)]


def distribution_summary(probs: np.ndarray, vocab) -> dict:
  """Entropy, top concepts and (WordNet vocabularies) the mass per lexicographer file."""
  nz = probs[probs > 0]
  top = np.argsort(-probs)[:10]
  out = {'policy_entropy': float(-(nz * np.log(nz)).sum()),
         'top_concepts': [vocab.lemmas[i] for i in top]}
  if vocab.lexnames:  # where the policy looks, by WordNet's coarse categories
    mass = {}
    for lexname, p in zip(vocab.lexnames, probs):
      mass[lexname] = mass.get(lexname, 0.0) + float(p)
    out['policy_lexname_mass'] = {k: round(v, 6) for k, v in sorted(mass.items())}
  return out
