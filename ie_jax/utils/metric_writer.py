"""Metrics to TensorBoard event files and a JSON-lines log, without TensorFlow.

clu.metric_writers imports TensorFlow, which is not in the core install; tensorboardX
writes the same event files. Method names follow clu's, so swapping back is trivial.
"""
import json
import os

import jax
import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars on process 0 only; other processes get a no-op writer."""

  def __init__(self, logdir: str):
    self._active = jax.process_index() == 0
    if self._active:
      os.makedirs(logdir, exist_ok=True)
      self._tb = SummaryWriter(logdir)
      self._jsonl = open(os.path.join(logdir, 'metrics.jsonl'), 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: dict) -> None:
    if not self._active:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for k, v in values.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')

  def write_texts(self, step: int, texts: dict) -> None:
    if not self._active:
      return
    for k, v in texts.items():
      self._tb.add_text(k, str(v), step)
    self._jsonl.write(json.dumps({'step': int(step), **{k: str(v) for k, v in texts.items()}})
                      + '\n')

  def flush(self) -> None:
    if self._active:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self._active:
      self._tb.close()
      self._jsonl.close()
