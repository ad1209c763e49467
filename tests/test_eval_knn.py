"""k-NN: equals a brute-force NumPy vote on random data, on 1 and 4 devices, in chunks."""
import jax
import numpy as np
import pytest

from ie_jax.eval import knn, metrics
from ie_jax.utils import sharding


def normalised(rng, n, d):
  x = rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(bank, bank_targets, queries, k, temperature):
  """The vote written out plainly, in float64: full similarity matrix, full sort."""
  sims = queries @ bank.T
  order = np.argsort(-sims, axis=1, kind='stable')[:, :k]
  scores = np.zeros((len(queries), bank_targets.shape[1]))
  for i in range(len(queries)):
    for j in order[i]:
      scores[i] += np.exp(sims[i, j] / temperature) * bank_targets[j]
  return scores, order


@pytest.mark.parametrize('num_devices', [1, 4])
@pytest.mark.parametrize('multi_label', [False, True])
def test_knn_equals_brute_force(num_devices, multi_label):
  rng = np.random.default_rng(0)
  bank, queries = normalised(rng, 300, 16), normalised(rng, 77, 16)
  if multi_label:
    bank_targets = (rng.uniform(size=(300, 5)) < 0.3).astype(np.float32)
  else:
    bank_targets = knn.one_hot(rng.integers(0, 5, 300), 5)
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  # chunk=32: 77 queries make 3 calls, the last one padded.
  scores, neighbours = knn.make_knn(mesh, chunk=32)(bank, bank_targets, queries)
  want_scores, want_neighbours = brute_force(bank, bank_targets, queries, 20, 0.07)
  np.testing.assert_array_equal(neighbours, want_neighbours)
  np.testing.assert_allclose(scores, want_scores, rtol=2e-5)
  if not multi_label:
    labels = rng.integers(0, 5, 77)
    np.testing.assert_array_equal(scores.argmax(1), want_scores.argmax(1))
    assert metrics.accuracy(labels, scores) == metrics.accuracy(labels, want_scores)


def test_temperature_weighting_beats_majority_vote():
  # One close neighbour of class 0 (cos 0.9) against two farther ones of class 1 (cos 0.8):
  # exp(0.9/0.07) = 3.85e5 > 2 exp(0.8/0.07) = 1.83e5, so class 0 wins a weighted vote
  # that a majority vote would give to class 1.
  angle = lambda c: [c, np.sqrt(1 - c**2)]
  bank = np.array([angle(0.9), angle(0.8), angle(0.8), [-1.0, 0.0]])
  targets = knn.one_hot(np.array([0, 1, 1, 1]), 2)
  mesh = sharding.make_mesh(jax.devices()[:1])
  scores, _ = knn.make_knn(mesh, k=3)(bank, targets, np.array([[1.0, 0.0]]))
  np.testing.assert_allclose(scores[0], [np.exp(0.9 / 0.07), 2 * np.exp(0.8 / 0.07)],
                             rtol=1e-5)
  assert scores[0].argmax() == 0


def test_fewer_training_images_than_k_is_an_error():
  mesh = sharding.make_mesh(jax.devices()[:1])
  with pytest.raises(ValueError, match='k=20 neighbours requested, but the training set has '
                                       'only 5 images'):
    knn.make_knn(mesh)(np.eye(5), np.eye(5), np.eye(5))
