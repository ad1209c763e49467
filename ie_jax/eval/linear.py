"""The linear probe: L2-regularised logistic regression on frozen, standardised features.

Protocol (the paper does not give one; this follows CLIP's and common SSL practice):
  1. Hold out a stratified 20% of the training split (seed 0).
  2. For each C in 10^-4 ... 10^2 (decade steps), standardise features with the mean and
     std of the other 80%, fit scikit-learn's `LogisticRegression` (lbfgs, multinomial,
     penalty 1/(2C) |w|^2, up to 1,000 iterations), and score the held-out part.
  3. Refit with the best C (ties: the smallest) on the whole training split, standardised
     with its own statistics, and score the test split once.
Multi-label targets (VOC2007) fit one binary logistic regression per class (one-vs-rest)
and are scored by mAP, both for choosing C and on the test split.

scikit-learn rather than a JAX solver: the fit is a convex problem on at most ~75k x 2048
features, where lbfgs on the host is minutes per C, and its result is a well-known
reference that others can reproduce.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from ie_jax.eval import metrics

C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 3))
VAL_FRACTION = 0.2
MAX_ITER = 1000


def _classifier(c: float, multi_label: bool, max_iter: int):
  logistic = LogisticRegression(C=c, max_iter=max_iter)
  return OneVsRestClassifier(logistic) if multi_label else logistic


def _fit_score(train_x, train_y, eval_x, eval_y, c, multi_label, max_iter):
  """Fits on (train_x, train_y) with C = c; returns (score on eval, scores, converged)."""
  scaler = StandardScaler().fit(train_x)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', ConvergenceWarning)
    model = _classifier(c, multi_label, max_iter).fit(scaler.transform(train_x), train_y)
  converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
  scores = model.decision_function(scaler.transform(eval_x))
  if scores.ndim == 1:  # two classes: sklearn returns the positive class's logit only
    scores = np.stack([-scores, scores], axis=1)
  return metrics.score(eval_y, scores, multi_label), scores, converged


def split_train(labels: np.ndarray, multi_label: bool, val_fraction: float = VAL_FRACTION,
                seed: int = 0):
  """Indices (fit, held-out) of the training split; stratified where every class allows it."""
  index = np.arange(len(labels))
  stratify = None
  if not multi_label and np.min(np.bincount(labels)[np.unique(labels)]) >= 2:
    stratify = labels
  return train_test_split(index, test_size=val_fraction, random_state=seed, stratify=stratify)


def probe(train_x, train_y, test_x, test_y, *, multi_label: bool, grid=C_GRID,
          val_fraction: float = VAL_FRACTION, seed: int = 0, max_iter: int = MAX_ITER) -> dict:
  """Runs the protocol above.

  Args:
    train_x, test_x: features [N, D].
    train_y, test_y: int labels [N], or multi-hot [N, C] when `multi_label`.
    multi_label: one-vs-rest and mAP instead of softmax and top-1 accuracy.
    grid: the values of C to try.
    val_fraction: the held-out part of the training split used to choose C.
    seed: for the held-out split.
    max_iter: lbfgs iterations per fit.

  Returns:
    A JSON-ready dict: `value` (test accuracy or mAP), `metric`, the chosen `C`,
    `val_scores` (C -> held-out score), `converged`, and for single-label targets
    `mean_per_class_accuracy`.
  """
  train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
  fit, held = split_train(train_y, multi_label, val_fraction, seed)
  val_scores = {}
  for c in grid:
    val_scores[c], _, _ = _fit_score(train_x[fit], train_y[fit], train_x[held], train_y[held],
                                     c, multi_label, max_iter)
  best = max(grid, key=lambda c: (val_scores[c], -c))
  value, scores, converged = _fit_score(train_x, train_y, test_x, test_y, best, multi_label,
                                        max_iter)
  out = {
      'value': value,
      'metric': 'mAP (one-vs-rest)' if multi_label else 'top-1 accuracy',
      'C': best,
      'val_scores': {f'{c:g}': s for c, s in val_scores.items()},
      'converged': converged,
  }
  if not multi_label:
    out['mean_per_class_accuracy'] = metrics.mean_per_class_accuracy(test_y, scores)
  return out
