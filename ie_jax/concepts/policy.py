"""The concept policy: observed query rewards -> a sampling distribution over concepts.

Paper §2.4-2.5 and C.4, in order:
  1. a query's score is the mean of its top-10 image rewards (`query_scores.py`);
  2. a GP with RBF kernel over the concept text embeddings is fitted to the observed
     concepts; an unobserved concept scores mu + sigma, an observed one its observed score;
  3. softmax at temperature (max - min) / SMR, SMR = 3;
  4. tiering: sorted by probability, the top 250 concepts share 0.8 of the mass, the next
     750 share 0.1 and the rest 0.1, each tier keeping its softmax proportions.

Choices where the paper is silent (also in docs/DECISIONS.md):
  - every drawn query is scored (`query_scores.QueryScoring`); a query already searched is
    not drawn again unless descriptors vary it (`Searched`);
  - repeated observations of one concept are averaged before the GP fit (one input per
    concept keeps the kernel matrix well conditioned; the mean is also what the concept
    keeps as its own score);
  - NaN or infinite scores are dropped with a warning; an empty update changes nothing;
  - with no observation yet, or when every score is equal, the distribution is uniform:
    tiering exact ties would favour 250 concepts by index alone;
  - tiers that fall past the end of a small vocabulary are dropped and the remaining
    masses rescaled to sum to one (a 500-concept vocabulary gives 0.8/0.1 -> 8/9, 1/9);
  - label-set modes draw class names in a balanced round-robin (each name once before any
    repeats, seeded order; `sampling.py`), and label queries are not GP observations (they are not
    vocabulary concepts);
  - optionally (`PolicyConfig.gp_points='captions'`, not the paper's), the GP is fitted to
    the downloaded images instead of the queries: each image's caption embedding and
    reward, predicted at each concept's query embedding (`caption_gp.py`).
"""
import dataclasses
import math
import warnings

import numpy as np

from ie_jax.concepts import caption_gp, gpr

# Fraction of each iteration's queries that are class names, per mode (paper §3.2).
LABEL_FRACTION = {
    'random': 0.0,           # uniform over the vocabulary
    'learned': 0.0,          # the paper's "Ours"
    'labels': 1.0,           # class names only
    'labels+relevant': 0.5,  # class names + uniform over the pruned vocabulary
    'labels+learned': 0.5,   # class names + learned over the pruned vocabulary
}
_LEARNED_MODES = ('learned', 'labels+learned')
GP_POINTS = ('concepts', 'captions')


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Policy hyper-parameters; the defaults are the paper's (or documented choices).

  Attributes:
    mode: a key of LABEL_FRACTION.
    smr: softmax range, (max - min score) / temperature.
    tier_bounds: upper ends of all but the last tier, in concepts.
    tier_masses: probability mass of each tier (one more than tier_bounds).
    length_scale: RBF length scale ("default RBF kernel": scikit-learn's 1.0).
    alpha: GP noise variance (not stated; 1e-2 is a noise std of 0.1 on scores that live
      in about [0.3, 0.8], and keeps float32 Cholesky stable for 10k observations).
    normalize_y: standardise the scores before the GP (scikit-learn's option). Without it
      the prior (mean 0, std 1) dwarfs rewards of 0.5-0.7, so every unobserved concept's
      mu + sigma outranks every observed one forever; the paper's estimated rewards stay
      in 0.5-0.73 (Fig. 6), which only the standardised GP reproduces.
    chunk_size: concepts per GP prediction step.
    replace: sample the iteration's concepts with replacement.
    redraw_searched: whether a concept searched before may be drawn again. A cached
      engine answers a repeated query with the same results, all already downloaded, so
      without descriptors to vary it a redraw is a wasted query.
    gp_points: what the GP is fitted to: 'concepts' (the paper: one point per observed
      concept, its text embedding and query score) or 'captions' (one point per
      downloaded image, its caption's embedding and its reward; concepts are then
      embedded by their query text). An engine ranks by what the captions say, so 20x
      more points, each where its image was found, predict a query's results far better
      from a few hundred queries (docs/DECISIONS.md, "The policy in a finite web").
    max_captions: the most images the 'captions' GP is fitted to (a uniform sample of
      them, `caption_gp.ImageObservations.add`); 8,192 keeps the fit near a second.
  """
  mode: str = 'learned'
  smr: float = 3.0
  tier_bounds: tuple[int, ...] = (250, 1000)
  tier_masses: tuple[float, ...] = (0.8, 0.1, 0.1)
  length_scale: float = 1.0
  alpha: float = 1e-2
  normalize_y: bool = True
  chunk_size: int = 8192
  replace: bool = False
  redraw_searched: bool = True
  gp_points: str = 'concepts'
  max_captions: int = 8192

  def __post_init__(self):
    if self.mode not in LABEL_FRACTION:
      raise ValueError(f'Unknown policy mode {self.mode!r}; valid: {sorted(LABEL_FRACTION)}.')
    if self.gp_points not in GP_POINTS:
      raise ValueError(f'Unknown gp_points {self.gp_points!r}; valid: {GP_POINTS}.')
    if len(self.tier_masses) != len(self.tier_bounds) + 1:
      raise ValueError(f'{len(self.tier_bounds)} tier bounds need '
                       f'{len(self.tier_bounds) + 1} masses; got {self.tier_masses}.')


# Step 1 (query scores) is query_scores.py; the observation history is the policy's state.

class Searched:
  """Which concepts have had their query searched already.

  Senses that share a lemma share a query ('bass' the fish and 'bass' the voice), so
  searching one searches all of them: `queries` maps each concept to its query's id.
  """

  def __init__(self, queries, searched=None):
    self.queries = np.asarray(queries, np.int64)
    self._done = np.zeros((int(self.queries.max(initial=-1)) + 1,), bool)
    if searched is not None:
      self._done[self.queries[np.asarray(searched, np.int64)]] = True

  @classmethod
  def by_text(cls, texts, searched=None) -> 'Searched':
    """Concepts grouped by identical query text."""
    _, ids = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    return cls(ids, searched)

  @property
  def mask(self) -> np.ndarray:
    """(concepts,) bool: whether each concept's query has been searched."""
    return self._done[self.queries]

  def add(self, concepts) -> 'Searched':
    out = Searched(self.queries)
    out._done = self._done.copy()  # pylint: disable=protected-access
    out._done[self.queries[np.asarray(concepts, np.int64)]] = True  # pylint: disable=protected-access
    return out


# eq=False: the fields are arrays, whose == is elementwise.
@dataclasses.dataclass(frozen=True, eq=False)
class Observations:
  """Every (concept, score) observed so far, in order; immutable.

  Attributes:
    vocab_size: concepts in the vocabulary the indices refer to.
    concepts: (n,) int64 concept indices.
    scores: (n,) float64 scores.
  """
  vocab_size: int
  concepts: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0,), np.int64))
  scores: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros((0,), np.float64))

  def add(self, concepts, scores) -> 'Observations':
    """The history with these observations appended; non-finite scores are dropped.

    Raises:
      ValueError: mismatched lengths or an index outside the vocabulary.
    """
    concepts = np.asarray(concepts, dtype=np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if concepts.shape != scores.shape:
      raise ValueError(f'{concepts.size} concepts but {scores.size} scores.')
    if concepts.size and (concepts.min() < 0 or concepts.max() >= self.vocab_size):
      raise ValueError(f'Concept indices must be in [0, {self.vocab_size}); got '
                       f'[{concepts.min()}, {concepts.max()}].')
    keep = np.isfinite(scores)
    if not keep.all():
      warnings.warn(f'Dropped {int((~keep).sum())} of {scores.size} concept scores that '
                    'are not finite (queries without enough images count as unobserved).',
                    RuntimeWarning, stacklevel=2)
    if not keep.any():
      return self
    return Observations(self.vocab_size, np.concatenate([self.concepts, concepts[keep]]),
                        np.concatenate([self.scores, scores[keep]]))

  def mean_by_concept(self) -> tuple[np.ndarray, np.ndarray]:
    """(unique concept indices, ascending; the mean score of each)."""
    ids, inverse = np.unique(self.concepts, return_inverse=True)
    sums = np.bincount(inverse, weights=self.scores, minlength=ids.size)
    counts = np.bincount(inverse, minlength=ids.size)
    return ids, sums / np.maximum(counts, 1)

  def to_state(self) -> dict:
    """Plain JSON-able data for the explorer checkpoint."""
    return {'vocab_size': int(self.vocab_size), 'concepts': self.concepts.tolist(),
            'scores': self.scores.tolist()}

  @classmethod
  def from_state(cls, state: dict, vocab_size: int | None = None) -> 'Observations':
    """Inverse of `to_state`; refuses a history recorded over another vocabulary size."""
    if vocab_size is not None and int(state['vocab_size']) != vocab_size:
      raise ValueError(f'The saved policy state is over {state["vocab_size"]} concepts; '
                       f'this vocabulary has {vocab_size}.')
    return cls(int(state['vocab_size'])).add(state['concepts'], state['scores'])


# Steps 2-4: scores -> distribution.

def learned_scores(embeddings, observations: Observations, *, length_scale: float = 1.0,
                   alpha: float = 1e-2, normalize_y: bool = True,
                   chunk_size: int = 8192) -> np.ndarray:
  """Per-concept score: the observed mean where observed, the GP's mu + sigma elsewhere.

  Args:
    embeddings: (N, d) concept text embeddings.
    observations: the history; must have at least one observation.

  Returns:
    (N,) float64 scores.
  """
  embeddings = np.asarray(embeddings)
  if embeddings.shape[0] != observations.vocab_size:
    raise ValueError(f'{embeddings.shape[0]} embeddings for a {observations.vocab_size}-'
                     'concept history.')
  ids, means = observations.mean_by_concept()
  if ids.size == 0:
    raise ValueError('learned_scores needs at least one observation.')
  fit = gpr.gpr_fit(embeddings[ids], means, length_scale=length_scale, alpha=alpha,
                    normalize_y=normalize_y)
  # Observed concepts keep their own score: predicting them too would be wasted solves.
  scores = np.empty((embeddings.shape[0],), np.float64)
  scores[ids] = means
  unobserved = np.setdiff1d(np.arange(embeddings.shape[0]), ids, assume_unique=True)
  mean, std = gpr.gpr_predict(fit, embeddings[unobserved], chunk_size=chunk_size)
  scores[unobserved] = mean.astype(np.float64) + std
  return scores


def range_softmax(scores, smr: float = 3.0) -> np.ndarray:
  """softmax(scores / tau) with tau = (max - min) / smr; uniform when all scores are equal."""
  scores = np.asarray(scores, dtype=np.float64)
  spread = scores.max() - scores.min()
  if not np.isfinite(spread):
    raise ValueError('Concept scores must be finite.')
  if spread == 0:
    return np.full(scores.shape, 1.0 / scores.size)
  logits = (scores - scores.max()) * (smr / spread)
  p = np.exp(logits)
  return p / p.sum()


def tier(probs, bounds=(250, 1000), masses=(0.8, 0.1, 0.1)) -> np.ndarray:
  """Paper Eq. 3: rescales each rank tier [b_j, b_{j+1}) to hold `masses[j]`.

  Ties in probability are ranked by concept index (a stable sort), so the result is
  deterministic. Tiers past the end of the vocabulary are dropped and the remaining masses
  rescaled to sum to one.
  """
  probs = np.asarray(probs, dtype=np.float64)
  n = probs.size
  order = np.argsort(-probs, kind='stable')
  edges = [0] + [min(b, n) for b in bounds] + [n]
  spans = [(lo, hi, m) for lo, hi, m in zip(edges[:-1], edges[1:], masses) if hi > lo]
  total = sum(m for _, _, m in spans)
  out = np.empty_like(probs)
  for lo, hi, mass in spans:
    members = order[lo:hi]
    out[members] = (mass / total) * probs[members] / probs[members].sum()
  return out


def distribution(embeddings, observations: Observations,
                 config: PolicyConfig = PolicyConfig(),
                 searched: 'Searched | None' = None,
                 images: caption_gp.ImageObservations | None = None) -> np.ndarray:
  """The sampling distribution over the (possibly pruned) vocabulary for `config.mode`.

  'random' and 'labels+relevant' are uniform; 'learned' and 'labels+learned' run steps
  2-4; 'labels' samples no concepts and also returns the uniform distribution (unused).
  Unless `config.redraw_searched`, concepts in `searched` then get no mass (the rest keep
  their proportions), as long as enough concepts are left to draw from.

  With `config.gp_points='captions'`, `embeddings` are the concepts' query embeddings and
  the scores come from `images` (`caption_gp.caption_scores`); it stays uniform until there is one.
  """
  n = observations.vocab_size
  # The concepts that may be drawn; a vocabulary searched out allows redraws again.
  allowed = np.ones((n,), bool)
  if not config.redraw_searched and searched is not None and not searched.mask.all():
    allowed = ~searched.mask
  probs = np.zeros((n,))
  probs[allowed] = 1.0 / allowed.sum()
  gp = dict(length_scale=config.length_scale, alpha=config.alpha,
            normalize_y=config.normalize_y, chunk_size=config.chunk_size)
  scores = None
  if config.mode in _LEARNED_MODES and config.gp_points == 'captions':
    if images is not None and len(images):
      scores = caption_gp.caption_scores(np.asarray(embeddings)[allowed], images, **gp)
  elif config.mode in _LEARNED_MODES and observations.concepts.size:
    scores = learned_scores(embeddings, observations, **gp)[allowed]
  if scores is not None and scores.max() != scores.min():
    # Tiered among the drawable concepts, so searched ones never hold a tier's mass.
    probs[allowed] = tier(range_softmax(scores, config.smr), config.tier_bounds,
                          config.tier_masses)
  return probs


def prune_vocabulary(concept_embeddings, label_embeddings, *, fraction: float = 0.1,
                     k: int | None = None, chunk_size: int = 16384) -> np.ndarray:
  """Indices of the concepts closest to the class names (paper §3.2, label-set variant).

  A concept's closeness is its mean cosine similarity to its `k` most similar class-name
  embeddings (default k = round(num_classes / 3), at least 1); the top
  ceil(fraction * N) concepts are kept (14,635 of 146,347 at 10%), returned in vocabulary
  order. Embeddings are L2-normalised, so the dot product is the cosine.
  """
  concepts = np.asarray(concept_embeddings, dtype=np.float32)
  labels = np.asarray(label_embeddings, dtype=np.float32)
  k = k or max(1, round(labels.shape[0] / 3))
  if not 1 <= k <= labels.shape[0]:
    raise ValueError(f'k={k} must be in [1, {labels.shape[0]}] (the number of classes).')
  closeness = np.empty((concepts.shape[0],), np.float64)
  for start in range(0, concepts.shape[0], chunk_size):
    sims = concepts[start:start + chunk_size] @ labels.T
    closeness[start:start + chunk_size] = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
  keep = math.ceil(fraction * concepts.shape[0])
  return np.sort(np.argsort(-closeness, kind='stable')[:keep])
