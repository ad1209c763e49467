"""The scores reported by probes: top-1 accuracy, mean per-class accuracy, and mAP.

All return fractions in [0, 1]; tables print them as percentages.
"""
import numpy as np
from sklearn.metrics import average_precision_score


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
  """Top-1 accuracy of class scores [N, C] against int labels [N]."""
  return float(np.mean(np.argmax(scores, axis=1) == labels))


def mean_per_class_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
  """Mean over the classes present in `labels` of their recall.

  Reported next to top-1 because the paper does not say which one its Pets and Flowers
  numbers are (CLIP's probe protocol uses this one for both).
  """
  predicted = np.argmax(scores, axis=1)
  return float(np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)]))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
  """Mean over classes of the (non-interpolated) average precision; for VOC2007.

  `targets` is multi-hot [N, C]. Classes without a positive in `targets` have no AP and are
  left out of the mean, so a small split does not count them as zeros.
  """
  present = np.flatnonzero(targets.sum(axis=0) > 0)
  return float(np.mean([average_precision_score(targets[:, c], scores[:, c])
                        for c in present]))


def score(labels: np.ndarray, scores: np.ndarray, multi_label: bool) -> float:
  """The headline number: mAP for multi-label targets, else top-1 accuracy."""
  if multi_label:
    return mean_average_precision(labels, scores)
  return accuracy(labels, scores)
