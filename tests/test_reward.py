"""The on-device kNN reward against a brute-force NumPy reference, and concept scores."""
import jax
import numpy as np
import pytest

from ie_jax import reward
from ie_jax.utils import sharding


def unit(rng, n, d):
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(cands, targets, k):
  sims = cands.astype(np.float64) @ targets.astype(np.float64).T
  return np.sort(sims, axis=1)[:, -k:].mean(axis=1)


@pytest.mark.parametrize('num_targets,target_chunk', [(100, 64), (37, 8192), (15, 4)])
def test_knn_reward_matches_brute_force(num_targets, target_chunk):
  rng = np.random.default_rng(0)
  cands, targets = unit(rng, 203, 32), unit(rng, num_targets, 32)
  fn = reward.make_knn_reward(sharding.make_mesh(), k=15, target_chunk=target_chunk,
                              candidate_chunk=64)
  got = fn(cands, targets)
  assert got.shape == (203,)
  np.testing.assert_allclose(got, brute_force(cands, targets, 15), rtol=1e-5, atol=1e-6)


def test_reward_is_sharded_over_the_mesh():
  rng = np.random.default_rng(1)
  mesh = sharding.make_mesh()
  cands = jax.device_put(unit(rng, 16, 8), sharding.batch_sharded(mesh))
  targets = jax.device_put(unit(rng, 20, 8), sharding.replicated(mesh))
  out = jax.jit(reward.knn_reward, in_shardings=(sharding.batch_sharded(mesh),
                                                 sharding.replicated(mesh)))(cands, targets)
  assert len(out.sharding.device_set) == 4


def test_too_few_targets_is_a_clear_error():
  with pytest.raises(ValueError, match='only 3 target images'):
    reward.knn_reward(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), k=15)


def test_non_finite_features_stop_with_a_clear_error():
  mesh = sharding.make_mesh()
  images = np.zeros((8, 16, 16, 3), np.uint8)
  with pytest.raises(FloatingPointError, match='non-finite features'):
    reward.embed_images(images, lambda x: np.full((x.shape[0], 4), np.nan), mesh,
                        image_size=8, batch_size=4)
  feats = reward.embed_images(images, lambda x: np.ones((x.shape[0], 4)), mesh, image_size=8,
                              batch_size=4)
  assert feats.shape == (8, 4)
