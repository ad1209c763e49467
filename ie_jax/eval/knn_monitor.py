"""The explorer's k-NN learning curve: accuracy (mAP if multi-label) of the current encoder
on the target's test images, with the target's training images as the bank.

Monitoring only (the paper's k-NN curves): the explorer never uses labels for anything
else. The test split is loaded once, on first use.
"""
import numpy as np

from ie_jax import reward
from ie_jax.data import target as target_lib
from ie_jax.eval import knn, metrics


class KnnMonitor:

  def __init__(self, config, target, mesh):
    self._config, self._target, self._mesh = config, target, mesh
    self._classify = knn.make_knn(mesh)  # built once: a fresh jit per call would recompile
    self._data = None

  def __call__(self, train_feats, embed, embed_kwargs) -> float:
    if self._data is None:
      test = target_lib.load(self._config.target, 'test')
      n = min(self._config.monitor.knn_examples, len(test.source))
      self._data = (knn.one_hot(self._target.labels(), len(self._target.class_names)),
                    test.source, np.asarray(test.labels())[:n], n)
    bank_targets, test_source, test_labels, n = self._data
    queries = reward.embed_images(target_lib.Head(test_source, n), embed, self._mesh,
                                  desc='embed test', **embed_kwargs)
    scores, _ = self._classify(train_feats, bank_targets, queries)
    return metrics.score(test_labels, scores, self._target.multi_label)
