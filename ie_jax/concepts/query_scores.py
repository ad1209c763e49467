"""Step 1 of the policy (paper §2.4): what one searched query tells about its concept.

A query's score is the mean of its top-k image rewards (`concept_score`); which of its
images count is `QueryScoring.rule` (docs/DECISIONS.md, "The policy in a finite web").
`score_queries` turns an iteration's query results into the (concept, score) observations
that `policy.Observations` collects. The explorer and the replays both score through here.
"""
import dataclasses
import math
import warnings

import numpy as np


def concept_score(image_rewards, *, top_k: int = 10, min_images: int = 10) -> float:
  """The mean of a query's `top_k` best image rewards; NaN when it is not an observation.

  Non-finite rewards (e.g. images that failed to embed) are dropped with a warning, then a
  query with fewer than `min_images` rewards left scores NaN, which `Observations.add`
  skips.
  """
  rewards = np.asarray(image_rewards, dtype=np.float64).ravel()
  finite = rewards[np.isfinite(rewards)]
  if finite.size < rewards.size:
    warnings.warn(f'Dropped {rewards.size - finite.size} non-finite image rewards of '
                  f'{rewards.size}.', RuntimeWarning, stacklevel=2)
  if finite.size < min_images or finite.size == 0:
    return math.nan
  return float(np.mean(np.sort(finite)[-top_k:]))


@dataclasses.dataclass(frozen=True)
class QueryScoring:
  """How one searched query becomes an observation of its concept.

  Attributes:
    top_k: image rewards averaged into the score (the paper's top 10).
    min_images: under rule 'new', fewer new images than this and the query is not observed.
    rule: which of a query's images it is scored on (docs/DECISIONS.md, "Query scoring"):
      'all': all its results that have a reward, the new ones and those an earlier query
        had already brought (their stored rewards): a query's score says how good its
        results are, whoever downloaded them first. Every drawn query is observed: slots
        of the top_k it cannot fill score the iteration's lowest reward.
      'yield': only the images it added, with unfilled slots at that floor: a query that
        adds nothing scores as the worst image found.
      'new': only the images it added, and a query that added fewer than `min_images` is
        not observed. So a dried-up concept is never observed again, the GP keeps
        predicting it from its neighbours, and the policy keeps drawing it.
  """
  top_k: int = 10
  min_images: int = 10
  rule: str = 'all'

  def __post_init__(self):
    if self.rule not in SCORING_RULES:
      raise ValueError(f'Unknown query scoring rule {self.rule!r}; valid: {SCORING_RULES}.')


SCORING_RULES = ('all', 'yield', 'new')


# eq=False: the fields are arrays, whose == is elementwise.
@dataclasses.dataclass(frozen=True, eq=False)
class QueryResult:
  """What one query of an iteration brought.

  Attributes:
    concept: its vocabulary index.
    requested: images asked of the engine.
    new: rewards of the images it added this iteration.
    old: stored rewards of its results that an earlier query had already brought (those
      whose reward is unknown, e.g. refused near-duplicates, are left out).
  """
  concept: int
  requested: int
  new: np.ndarray
  old: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,)))


def _finite(values) -> np.ndarray:
  values = np.asarray(values, np.float64).ravel()
  return values[np.isfinite(values)]


def score_queries(results, scoring: QueryScoring = QueryScoring()):
  """An iteration's query results -> (concepts, scores) observations, by `scoring.rule`.

  A concept queried twice in one iteration is scored once, on the images of both queries.
  A NaN score is not an observation (`Observations.add` drops it): under rule 'new' a query
  with too few new images, under every rule an iteration with no reward at all.
  """
  by_concept: dict[int, list] = {}
  for r in results:
    by_concept.setdefault(int(r.concept), []).append(r)
  everything = [_finite(v) for r in results for v in (r.new, r.old)]
  everything = np.concatenate(everything) if everything else np.zeros((0,))
  # No reward at all this iteration (nothing stored): no scale to score against, so the
  # queries are not observed.
  floor = float(everything.min()) if everything.size else math.nan
  concepts, scores = [], []
  for concept, queries in sorted(by_concept.items()):
    new = np.concatenate([np.asarray(q.new, np.float64).ravel() for q in queries])
    if scoring.rule == 'new':
      score = concept_score(new, top_k=scoring.top_k, min_images=scoring.min_images)
    else:
      pool = [_finite(new)] + ([_finite(q.old) for q in queries] if scoring.rule == 'all'
                               else [])
      slots = max(1, min(scoring.top_k, sum(q.requested for q in queries)))
      best = np.sort(np.concatenate(pool))[::-1][:slots]
      score = float((best.sum() + floor * (slots - best.size)) / slots)
    concepts.append(concept)
    scores.append(score)
  return np.asarray(concepts, np.int64), np.asarray(scores, np.float64)
