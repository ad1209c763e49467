"""The concept policy: GPR parity with scikit-learn, the softmax/tiering math, sampling,
bad input, and a synthetic world in which the learned policy finds a rewarding cluster."""
import json
import math
import warnings

import jax
import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF

from ie_jax.concepts import gpr
from ie_jax.concepts import caption_gp, policy, query_scores, sampling


def unit_vectors(rng, n, d=384):
  x = rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# GPR.

@pytest.fixture(scope='module')
def gp_problem():
  rng = np.random.default_rng(0)
  x = unit_vectors(rng, 2000)
  y = rng.uniform(0.3, 0.8, size=2000)
  # Fresh points plus training points (where sigma is small and cancellation is worst).
  queries = np.concatenate([unit_vectors(rng, 400), x[:100]])
  reference = GaussianProcessRegressor(kernel=RBF(1.0), alpha=1e-2, optimizer=None,
                                       normalize_y=False).fit(x, y)
  mean, std = reference.predict(queries, return_std=True)
  return x, y, queries, mean, std


def test_gpr_matches_sklearn_float32(gp_problem):
  x, y, queries, mean, std = gp_problem
  fit = gpr.gpr_fit(x, y, length_scale=1.0, alpha=1e-2)
  got_mean, got_std = gpr.gpr_predict(fit, queries, chunk_size=128)  # 4 chunks, 1 padded
  assert got_mean.dtype == np.float32
  np.testing.assert_allclose(got_mean, mean, rtol=1e-4)
  np.testing.assert_allclose(got_std, std, rtol=2e-4)
  assert std[-100:].max() < 0.2 < std[:400].min()  # the two regimes are both covered


def test_gpr_matches_sklearn_float64(gp_problem):
  x, y, queries, mean, std = gp_problem
  with jax.enable_x64(True):
    fit = gpr.gpr_fit(x, y, length_scale=1.0, alpha=1e-2)
    got_mean, got_std = gpr.gpr_predict(fit, queries, chunk_size=256)
  np.testing.assert_allclose(got_mean, mean, rtol=1e-9)
  np.testing.assert_allclose(got_std, std, rtol=1e-9)


def test_gpr_length_scale_and_single_point():
  rng = np.random.default_rng(1)
  x, q = unit_vectors(rng, 1, 8), unit_vectors(rng, 5, 8)
  reference = GaussianProcessRegressor(kernel=RBF(0.5), alpha=1e-3, optimizer=None).fit(
      x, [0.6])
  mean, std = reference.predict(q, return_std=True)
  got_mean, got_std = gpr.gpr_predict(gpr.gpr_fit(x, [0.6], length_scale=0.5, alpha=1e-3), q)
  np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got_std, std, rtol=1e-5)


def test_gpr_rejects_bad_input():
  x = np.ones((3, 4)) / 2.0  # three identical points: singular kernel without noise
  with pytest.raises(ValueError, match='not positive definite'):
    gpr.gpr_fit(x, [0.1, 0.2, 0.3], alpha=0.0)
  with pytest.raises(ValueError, match='finite'):
    gpr.gpr_fit(x, [0.1, np.nan, 0.3])
  with pytest.raises(ValueError, match='n >= 1'):
    gpr.gpr_fit(np.zeros((0, 4)), [])


# Scores -> distribution.

def test_range_softmax_against_numpy():
  rng = np.random.default_rng(2)
  scores = rng.uniform(0.2, 1.4, size=1000)
  tau = (scores.max() - scores.min()) / 3.0
  expected = np.exp(scores / tau) / np.exp(scores / tau).sum()
  p = policy.range_softmax(scores, smr=3.0)
  np.testing.assert_allclose(p, expected, rtol=1e-12)
  assert p.max() / p.min() == pytest.approx(math.exp(3.0))
  np.testing.assert_array_equal(policy.range_softmax(np.full(7, 0.4)), np.full(7, 1 / 7))


def reference_tier(p, bounds, masses):
  """Eq. 3 written out rank by rank."""
  ranked = sorted(range(len(p)), key=lambda i: (-p[i], i))
  tier_of = {}
  for rank, i in enumerate(ranked):
    tier_of[i] = sum(rank >= b for b in bounds)
  present = sorted(set(tier_of.values()))
  total = sum(masses[t] for t in present)
  tier_sum = {t: sum(p[i] for i in tier_of if tier_of[i] == t) for t in present}
  return np.array([masses[tier_of[i]] / total * p[i] / tier_sum[tier_of[i]]
                   for i in range(len(p))])


@pytest.mark.parametrize('n', [5000, 1000, 500, 100])
def test_tiering_against_reference(n):
  rng = np.random.default_rng(n)
  p = policy.range_softmax(rng.normal(size=n))
  got = policy.tier(p, (250, 1000), (0.8, 0.1, 0.1))
  np.testing.assert_allclose(got, reference_tier(p, (250, 1000), (0.8, 0.1, 0.1)),
                             rtol=1e-10)
  assert got.sum() == pytest.approx(1.0)
  order = np.argsort(-p)
  if n == 5000:
    assert got[order[:250]].sum() == pytest.approx(0.8)
    assert got[order[250:1000]].sum() == pytest.approx(0.1)
    assert got[order[1000:]].sum() == pytest.approx(0.1)
  if n == 500:
    assert got[order[:250]].sum() == pytest.approx(8 / 9)
  if n == 100:
    np.testing.assert_allclose(got, p, rtol=1e-12)  # a single tier is the softmax itself
  # Within a tier the softmax order is kept.
  assert np.all(np.diff(got[order[:min(n, 250)]]) <= 1e-15)


def test_learned_scores_observed_and_unobserved():
  rng = np.random.default_rng(3)
  emb = unit_vectors(rng, 300, 16)
  obs = policy.Observations(300).add([5, 9, 5], [0.4, 0.7, 0.6])
  scores = policy.learned_scores(emb, obs)
  assert scores[5] == pytest.approx(0.5) and scores[9] == pytest.approx(0.7)
  mean, std = gpr.gpr_predict(gpr.gpr_fit(emb[[5, 9]], [0.5, 0.7], alpha=1e-2,
                                         normalize_y=True), emb)
  others = np.setdiff1d(np.arange(300), [5, 9])
  np.testing.assert_allclose(scores[others], (mean + std)[others], rtol=1e-6)


def test_distribution_is_uniform_before_observations():
  emb = unit_vectors(np.random.default_rng(4), 50, 8)
  for mode in policy.LABEL_FRACTION:
    p = policy.distribution(emb, policy.Observations(50), policy.PolicyConfig(mode=mode))
    np.testing.assert_array_equal(p, np.full(50, 1 / 50))


def test_unknown_mode_lists_valid_modes():
  with pytest.raises(ValueError, match="'labels\\+learned', 'labels\\+relevant', 'learned'"):
    policy.PolicyConfig(mode='ours')


# Observations and bad input.

def test_concept_score_top10_and_bad_rewards():
  rewards = np.linspace(0.0, 1.0, 101)
  assert query_scores.concept_score(rewards) == pytest.approx(np.mean(rewards[-10:]))
  assert math.isnan(query_scores.concept_score(rewards[:9]))   # fewer than min_images
  assert math.isnan(query_scores.concept_score([]))
  with pytest.warns(RuntimeWarning, match='Dropped 2 non-finite'):
    score = query_scores.concept_score(np.r_[rewards[:20], np.nan, np.inf])
  assert score == pytest.approx(np.mean(rewards[10:20]))


def test_observations_bad_input_and_round_trip():
  obs = policy.Observations(10)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert obs.add([], []) is obs                       # empty update: unchanged
  with pytest.warns(RuntimeWarning, match='Dropped 1 of 2'):
    obs2 = obs.add([1, 2], [np.nan, 0.5])
  with pytest.warns(RuntimeWarning):
    assert obs2.add([3], [np.nan]) is obs2              # all-NaN update: unchanged
  obs3 = obs2.add([2, 7], [0.7, 0.1])
  ids, means = obs3.mean_by_concept()
  np.testing.assert_array_equal(ids, [2, 7])
  np.testing.assert_allclose(means, [0.6, 0.1])
  restored = policy.Observations.from_state(json.loads(json.dumps(obs3.to_state())), 10)
  np.testing.assert_array_equal(restored.concepts, obs3.concepts)
  np.testing.assert_array_equal(restored.scores, obs3.scores)
  with pytest.raises(ValueError, match='over 10 concepts'):
    policy.Observations.from_state(obs3.to_state(), vocab_size=11)
  with pytest.raises(ValueError, match=r'\[0, 10\)'):
    obs.add([10], [0.5])


# Sampling.

def test_sampling_is_seeded():
  p = policy.range_softmax(np.random.default_rng(5).normal(size=1000))
  a = sampling.sample_concepts(p, 256, seed=7)
  np.testing.assert_array_equal(a, sampling.sample_concepts(p, 256, seed=7))
  assert not np.array_equal(a, sampling.sample_concepts(p, 256, seed=8))
  assert len(set(a.tolist())) == 256                    # without replacement by default
  assert len(set(sampling.sample_concepts(p, 2000, seed=7, replace=True).tolist())) < 1000
  with pytest.raises(ValueError, match='1001 distinct'):
    sampling.sample_concepts(p, 1001, seed=0)


def test_label_queries_are_balanced():
  p = np.full(1000, 0.001)
  q = sampling.sample_queries(p, 256, mode='labels', num_labels=37, seed=0)
  assert q.concepts.size == 0 and q.labels.size == 256
  counts = np.bincount(q.labels, minlength=37)
  assert counts.min() == 6 and counts.max() == 7       # 256 = 6 x 37 + 34
  q = sampling.sample_queries(p, 256, mode='labels+learned', num_labels=37, seed=0)
  assert q.concepts.size == 128 and q.labels.size == 128
  assert np.bincount(q.labels, minlength=37).min() == 3
  q = sampling.sample_queries(p, 256, mode='random', seed=0)
  assert q.labels.size == 0 and q.concepts.size == 256
  with pytest.raises(ValueError, match='needs class names'):
    sampling.sample_queries(p, 8, mode='labels+relevant', seed=0)


def test_prune_vocabulary_against_brute_force():
  rng = np.random.default_rng(6)
  concepts, labels = unit_vectors(rng, 1001, 32), unit_vectors(rng, 10, 32)
  kept = policy.prune_vocabulary(concepts, labels, chunk_size=300)
  assert kept.size == 101                               # ceil(10% of 1001)
  k = 3                                                 # round(10 / 3)
  closeness = [np.mean(sorted(concepts[i] @ labels.T)[-k:]) for i in range(1001)]
  expected = np.sort(np.argsort(closeness)[::-1][:101])
  np.testing.assert_array_equal(kept, expected)


# The synthetic world.

def test_learned_policy_finds_the_rewarding_cluster():
  """100 semantic groups of 50 concepts; group 0 rewards 0.7, the rest 0.5 (paper Fig. 6
  range). The learned policy's mass on group 0 must rise far above the 1% base rate."""
  rng = np.random.default_rng(0)
  groups, size = 100, 50
  centres = unit_vectors(rng, groups)
  emb = np.repeat(centres, size, axis=0) + 0.7 * rng.normal(size=(groups * size, 384)) / 20
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  in_cluster = np.repeat(np.arange(groups), size) == 0
  reward = np.where(in_cluster, 0.7, 0.5)
  base = in_cluster.mean()

  def run(mode):
    obs, masses = policy.Observations(groups * size), []
    config = policy.PolicyConfig(mode=mode)
    for it in range(6):
      p = policy.distribution(emb, obs, config)
      masses.append(p[in_cluster].sum())
      picked = sampling.sample_concepts(p, 64, seed=it)
      obs = obs.add(picked, reward[picked] + rng.normal(0, 0.02, picked.size))
    return np.array(masses)

  learned, random = run('learned'), run('random')
  np.testing.assert_allclose(random, base, rtol=1e-12)
  assert learned[0] == pytest.approx(base)
  # Found after one iteration, and kept: the mass never falls back once the cluster's
  # concepts are observed (the standardised GP; see PolicyConfig.normalize_y).
  assert np.all(learned[1:] > 20 * base), learned
  assert learned[-1] >= 0.9 * learned[1:].max(), learned


def test_without_normalize_y_the_prior_outranks_what_was_found():
  """Why normalize_y is on: with a (0, 1) prior, unobserved mu + sigma beats 0.7 forever."""
  rng = np.random.default_rng(0)
  emb = unit_vectors(rng, 300)
  obs = policy.Observations(300).add(np.arange(20), np.full(20, 0.7))
  raw = policy.learned_scores(emb, obs, normalize_y=False)
  assert raw[20:].min() > 0.7  # every unobserved concept outranks every observed one
  std = policy.learned_scores(emb, obs.add([20], [0.5]), normalize_y=True)
  assert std[21:].max() < 0.75


def test_gpr_normalize_y_matches_sklearn(gp_problem):
  x, y, queries, _, _ = gp_problem
  reference = GaussianProcessRegressor(kernel=RBF(1.0), alpha=1e-2, optimizer=None,
                                       normalize_y=True).fit(x[:500], y[:500])
  mean, std = reference.predict(queries, return_std=True)
  with jax.enable_x64(True):
    fit = gpr.gpr_fit(x[:500], y[:500], alpha=1e-2, normalize_y=True)
    got_mean, got_std = gpr.gpr_predict(fit, queries, chunk_size=256)
  np.testing.assert_allclose(got_mean, mean, rtol=1e-9)
  np.testing.assert_allclose(got_std, std, rtol=1e-9)


# The 'captions' GP (gp_points='captions').

def test_image_observations_keep_a_uniform_sample_whatever_the_order():
  rng = np.random.default_rng(0)
  keys = rng.choice(2**62, size=300, replace=False).astype(np.uint64) * np.uint64(3)
  emb = unit_vectors(rng, 300, d=8).astype(np.float32)
  rewards = rng.random(300).astype(np.float32)
  one = caption_gp.ImageObservations().add(keys, emb, rewards, limit=100)
  order = rng.permutation(300)
  two = caption_gp.ImageObservations()
  for part in np.array_split(order, 7):  # seven iterations, in another order
    two = two.add(keys[part], emb[part], rewards[part], limit=100)
  assert len(one) == len(two) == 100
  assert sorted(one.keys.tolist()) == sorted(two.keys.tolist())
  # Each kept image keeps its own embedding and reward.
  lookup = {int(k): i for i, k in enumerate(keys)}
  for k, e, r in zip(two.keys, two.embeddings, two.rewards):
    np.testing.assert_array_equal(e, emb[lookup[int(k)]])
    assert r == rewards[lookup[int(k)]]


def test_image_observations_drop_repeats_uncaptioned_and_non_finite():
  emb = np.eye(4, dtype=np.float32)
  obs = caption_gp.ImageObservations().add([1, 2], emb[:2], [0.5, 0.6], limit=10)
  obs = obs.add([2, 3, 4, 5, 5], np.stack([emb[2], emb[3], np.zeros(4), emb[0], emb[1]]),
                [0.9, np.nan, 0.1, 0.2, 0.3], limit=10)
  # 2: seen; 3: no reward; 4: no caption (zero embedding); 5 twice: once.
  assert sorted(obs.keys.tolist()) == [1, 2, 5]
  assert obs.rewards[obs.keys.tolist().index(2)] == pytest.approx(0.6)
  with pytest.raises(ValueError, match='2 keys but 1 rewards'):
    obs.add([7, 8], emb[:2], [0.1], limit=10)


def test_caption_scores_rank_queries_by_the_rewards_of_captions_near_them():
  rng = np.random.default_rng(1)
  centres = unit_vectors(rng, 6, d=16)
  # Images around six topics; topic 2's images are rewarding.
  topic = np.repeat(np.arange(6), 30)
  captions = centres[topic] + 0.15 * rng.normal(size=(180, 16))
  captions /= np.linalg.norm(captions, axis=1, keepdims=True)
  rewards = np.where(topic == 2, 0.9, 0.2) + 0.02 * rng.normal(size=180)
  images = caption_gp.ImageObservations().add(np.arange(180), captions, rewards, limit=1000)
  scores = caption_gp.caption_scores(centres, images, length_scale=0.5)
  assert int(np.argmax(scores)) == 2
  config = policy.PolicyConfig(length_scale=0.5, tier_bounds=(1,), tier_masses=(0.9, 0.1),
                               gp_points='captions')
  probs = policy.distribution(centres, policy.Observations(6), config, images=images)
  assert probs[2] == pytest.approx(0.9)
  # No image yet: uniform, whatever the concept observations say.
  probs = policy.distribution(centres, policy.Observations(6).add([2], [1.0]), config,
                              images=caption_gp.ImageObservations())
  np.testing.assert_allclose(probs, 1 / 6)
  with pytest.raises(ValueError, match='gp_points'):
    policy.PolicyConfig(gp_points='images')


def test_query_list_gives_class_names_negative_ids_and_descriptors_every_text():
  drawn = sampling.Queries(concepts=np.asarray([2, 0]), labels=np.asarray([1, 0]))

  class Descriptors:
    def queries(self, names, *, seed):
      return [f'{seed} {n}' for n in names]

  assert sampling.query_list(drawn, ['ant', 'bee', 'cat'], ['dog', 'elk']) == [
      [2, 'cat'], [0, 'ant'], [-2, 'elk'], [-1, 'dog']]
  assert sampling.query_list(drawn, ['ant', 'bee', 'cat'], ['dog', 'elk'],
                           descriptors=Descriptors(), seed=7) == [
      [2, '7 cat'], [0, '7 ant'], [-2, '7 elk'], [-1, '7 dog']]
