"""Linear probe: matches scikit-learn on data with known linear structure; mAP by hand."""
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from ie_jax.eval import linear, metrics


def gaussian_classes(rng, n, means):
  """Shared-covariance Gaussian classes: the Bayes classifier is linear."""
  labels = rng.integers(0, len(means), n)
  return means[labels] + rng.normal(size=(n, means.shape[1])), labels


def sklearn_reference(train_x, train_y, test_x, multi_label=False):
  scaler = StandardScaler().fit(train_x)
  model = LogisticRegression(max_iter=1000)
  if multi_label:
    model = OneVsRestClassifier(model)
  model.fit(scaler.transform(train_x), train_y)
  return model.decision_function(scaler.transform(test_x))


def test_probe_reaches_sklearn_and_bayes_accuracy():
  rng = np.random.default_rng(0)
  means = rng.normal(scale=0.45, size=(5, 32))
  train_x, train_y = gaussian_classes(rng, 2000, means)
  test_x, test_y = gaussian_classes(rng, 4000, means)
  result = linear.probe(train_x, train_y, test_x, test_y, multi_label=False)

  reference = metrics.accuracy(test_y, sklearn_reference(train_x, train_y, test_x))
  # The true rule: argmax_c x.mu_c - |mu_c|^2 / 2.
  bayes = metrics.accuracy(test_y, test_x @ means.T - 0.5 * np.sum(means**2, axis=1))
  assert 0.6 < bayes < 0.95  # neither trivial nor hopeless
  assert abs(result['value'] - reference) <= 0.005, (result, reference)
  assert result['value'] >= bayes - 0.02, (result, bayes)
  assert result['metric'] == 'top-1 accuracy'
  assert result['C'] in linear.C_GRID and len(result['val_scores']) == len(linear.C_GRID)
  assert result['converged']


def test_multi_label_probe_reports_map_like_sklearn_one_vs_rest():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(16, 4))
  make = lambda n: rng.normal(size=(n, 16))
  label = lambda x: (x @ w + rng.normal(size=(len(x), 4)) > 1.0).astype(np.int32)
  train_x, test_x = make(1500), make(1500)
  train_y, test_y = label(train_x), label(test_x)
  result = linear.probe(train_x, train_y, test_x, test_y, multi_label=True)
  reference = metrics.mean_average_precision(
      test_y, sklearn_reference(train_x, train_y, test_x, multi_label=True))
  assert result['metric'] == 'mAP (one-vs-rest)'
  assert abs(result['value'] - reference) <= 0.005, (result, reference)
  assert 'mean_per_class_accuracy' not in result


def test_metrics_by_hand():
  # Positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2. Class 1 has no positive: left out.
  targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
  scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
  assert np.isclose(metrics.mean_average_precision(targets, scores), (1 + 2 / 3) / 2)
  labels = np.array([0, 0, 0, 1])
  logits = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
  assert metrics.accuracy(labels, logits) == 0.75
  assert metrics.mean_per_class_accuracy(labels, logits) == (2 / 3 + 1) / 2
