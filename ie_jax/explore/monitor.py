"""What the explore loop reports beside the algorithm: a hook it calls after the reward
phase, whose results go to the logs and the report and never back into the loop.

* the k-NN accuracy of the current encoder on the target's test images (the paper's
  learning curves; `eval/knn_monitor.py`: the only use of labels in a run);
* the grid of the iteration's best and worst candidates by reward (the paper's Fig. 4).

The policy's entropy and top concepts come with the sample phase's summary
(`sampling.distribution_summary`).
"""
import os

from ie_jax import report
from ie_jax.eval import knn_monitor


class Monitor:
  """The explore loop's monitoring hook."""

  def __init__(self, config, target, mesh, workdir: str, primary: bool):
    self._knn = (knn_monitor.KnnMonitor(config, target, mesh)
                 if config.monitor.knn_examples > 0 else None)
    self._grids = os.path.join(workdir, 'report', 'grids')
    self._primary = primary

  def after_reward(self, iteration: int, store, rewards, target_features, embed,
                   embed_kwargs) -> dict:
    """Scalars for the iteration's summary; draws the candidate grid on process 0.

    Args:
      iteration: the iteration whose candidates were just rewarded.
      store: the web store holding them.
      rewards: their rewards, by store index.
      target_features: the target's training images embedded by the current encoder
        (the k-NN bank, computed once by the reward phase).
      embed, embed_kwargs: how the reward phase embeds images.
    """
    out = {}
    if self._knn is not None:
      out['knn_accuracy'] = self._knn(target_features, embed, embed_kwargs)
    if self._primary:
      report.candidate_grid(store, iteration, rewards,
                            os.path.join(self._grids, f'iteration-{iteration:05d}.png'))
    return out
