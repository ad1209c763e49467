"""The CI guard on the method's core: in a small generated finite web, the explorer's own
policy fed an oracle reward finds relevant images at >= 3x the rate of random search.

The web is clusters of concepts whose queries return overlapping images from their
cluster's pool, so clusters run dry as in a real finite web, and a few clusters are
relevant. A regression in query scoring, the GP, tiering or sampling lowers the learned
policy's precision towards random's and fails this test. Deterministic: fixed seeds.
"""
import dataclasses

import numpy as np
import pytest

from ie_jax.concepts import policy, query_scores
from ie_jax.worlds import replay

POLICY = policy.PolicyConfig(mode='learned', length_scale=0.5, tier_bounds=(64, 256),
                             tier_masses=(0.95, 0.04, 0.01), redraw_searched=False)
SCORING = query_scores.QueryScoring(top_k=2, rule='all')
BUDGET = replay.Budget(iterations=6, queries=16, images=10)


def generated_web(seed: int = 0, clusters: int = 40, per_cluster: int = 50, pool: int = 120,
                  relevant_clusters: int = 4, dim: int = 32):
  """(Web, concept embeddings, each concept's query id): 2,000 concepts, 4,800 images."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, dim))
  cluster = np.repeat(np.arange(clusters), per_cluster)
  embeddings = centres[cluster] + 0.6 * rng.normal(size=(len(cluster), dim))
  embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
  # Each cluster's pool of images; relevant clusters mostly relevant, the others rarely.
  share = np.where(np.arange(clusters) < relevant_clusters, 0.8, 0.03)
  relevant = rng.random((clusters, pool)) < share[:, None]
  # Each image's caption: about its cluster's topic, as its concepts' queries are.
  captions = np.repeat(centres, pool, axis=0) + 0.6 * rng.normal(size=(clusters * pool, dim))
  captions /= np.linalg.norm(captions, axis=1, keepdims=True)
  results = np.stack([c * pool + rng.choice(pool, BUDGET.images, replace=False)
                      for c in cluster])
  # Some concepts share a query (two senses, one word): every 10th repeats its neighbour's.
  queries = np.arange(len(cluster))
  queries[1::10] = queries[0::10][:len(queries[1::10])]
  results[1::10] = results[0::10][:len(results[1::10])]
  return replay.Web(results, relevant.ravel(), captions), embeddings, queries


def mean_precisions(result) -> dict:
  return {name: float(np.mean([np.nanmean(r['precision']) for r in runs.values()]))
          for name, runs in result['runs'].items()}


@pytest.fixture(scope='module')
def replayed():
  web, embeddings, queries = generated_web()
  return replay.compare(web, embeddings, POLICY, SCORING, BUDGET, seeds=[0, 1, 2],
                        queries=queries)


def test_learned_with_an_oracle_reward_beats_random_3x(replayed):
  means = mean_precisions(replayed)
  assert means['learned, oracle reward'] >= 3 * means['random'], means
  assert means['ceiling'] >= means['learned, oracle reward'], means
  assert replayed['captured'] >= 1 / 3, replayed['captured']


def test_the_captions_gp_also_beats_random_3x():
  """gp_points='captions' (the demo's policy): the GP fitted to the downloaded images'
  captions and rewards, predicted at each concept's query."""
  web, embeddings, queries = generated_web()
  config = dataclasses.replace(POLICY, gp_points='captions')
  result = replay.compare(web, embeddings, config, SCORING, BUDGET, seeds=[0, 1, 2],
                          queries=queries)
  means = mean_precisions(result)
  assert means['learned, oracle reward'] >= 3 * means['random'], means
  assert result['captured'] >= 1 / 3, result['captured']
  with pytest.raises(ValueError, match='caption embeddings'):
    replay.run_policy(replay.Web(web.results, web.relevant), embeddings, config, SCORING,
                      BUDGET, seed=0, queries=queries)


def test_the_replay_is_deterministic(replayed):
  web, embeddings, queries = generated_web()
  again = replay.compare(web, embeddings, POLICY, SCORING, BUDGET, seeds=[0, 1, 2],
                         queries=queries)
  assert mean_precisions(again) == mean_precisions(replayed)


def test_no_query_is_searched_twice_without_descriptors():
  web, embeddings, queries = generated_web()
  out = replay.run_policy(web, embeddings, POLICY, SCORING, BUDGET, seed=0, queries=queries)
  # Every drawn query brought something new at first; a redraw would bring nothing.
  drawn = out['drawn']
  assert len({queries[c] for c in np.concatenate(drawn)}) == sum(len(d) for d in drawn)


def test_every_drawn_query_is_observed():
  """A query whose results were all downloaded before still scores (rule 'all': its
  stored rewards; rule 'yield': the floor), so the GP learns that a concept ran dry."""
  old_only = query_scores.QueryResult(3, 10, new=np.zeros((0,)), old=np.array([1.0, 1.0, 0.5]))
  nothing = query_scores.QueryResult(4, 10, new=np.zeros((0,)))
  fresh = query_scores.QueryResult(5, 10, new=np.array([0.2, 0.9, 0.4]))
  for rule, expect in (('all', [1.0, 0.2, 0.65]), ('yield', [0.2, 0.2, 0.65])):
    concepts, scores = query_scores.score_queries([old_only, nothing, fresh],
                                            query_scores.QueryScoring(top_k=2, rule=rule))
    assert concepts.tolist() == [3, 4, 5]
    np.testing.assert_allclose(scores, expect)
  _, scores = query_scores.score_queries([old_only, nothing, fresh],
                                   query_scores.QueryScoring(top_k=2, min_images=2, rule='new'))
  assert np.isnan(scores[:2]).all() and scores[2] == pytest.approx(0.65)


def test_searched_concepts_get_no_mass_and_tiers_refill():
  emb = np.eye(6)
  obs = policy.Observations(6).add([0, 1], [1.0, 0.0])
  config = dataclasses.replace(POLICY, tier_bounds=(2,), tier_masses=(0.9, 0.1))
  searched = policy.Searched.by_text(['a', 'b', 'a', 'c', 'd', 'e'], [0])
  probs = policy.distribution(emb, obs, config, searched=searched)
  assert probs[0] == 0 and probs[2] == 0  # 'a' was searched: both its senses are done
  np.testing.assert_allclose(probs.sum(), 1.0)
  # The top tier holds two drawable concepts with 0.9 of the mass.
  assert np.sort(probs)[-2:].sum() == pytest.approx(0.9)


def test_a_synthetic_reward_has_the_auc_asked_for():
  from ie_jax.worlds import diagnose  # pylint: disable=g-import-not-at-top
  relevant = np.random.default_rng(1).random(20_000) < 0.1
  for auc in (0.5, 0.7, 0.9):
    got = diagnose._auc(relevant, replay.synthetic_reward(relevant, auc, seed=3))  # pylint: disable=protected-access
    assert abs(got - auc) < 0.02, (auc, got)
  with pytest.raises(ValueError, match='0.5 <= AUC < 1'):
    replay.synthetic_reward(relevant, 1.0)


def test_a_better_reward_gets_more_of_the_room():
  """The rows `--reward_auc` adds: a worse reward, a lower precision; a near-perfect one,
  near the oracle's."""
  web, embeddings, queries = generated_web()
  result = replay.compare(web, embeddings, POLICY, SCORING, BUDGET, seeds=[0, 1, 2],
                          queries=queries, reward_aucs=(0.6, 0.99))
  means = mean_precisions(result)
  assert means['random'] < means['learned, reward AUC 0.60'] < means[
      'learned, reward AUC 0.99'], means
  assert means['learned, reward AUC 0.99'] >= 0.8 * means['learned, oracle reward'], means
