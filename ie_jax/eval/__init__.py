"""Evaluation of frozen features: k-NN, linear probe, and the paper's results table.

  python -m ie_jax.eval.probe --workdir=W --config=configs/tiny.py [--step=N] [--follow]
  python -m ie_jax.eval.table RUN_DIR [RUN_DIR ...]

`features` restores a checkpoint read-only and caches its features, `knn` and `linear` are
the two classifiers, `probe` runs both per checkpoint, and `table` gathers runs into Table 1.
"""
