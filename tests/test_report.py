"""The HTML report: plots for the metrics present, escaped text, atomic page."""
import os

from ie_jax import report


def test_report_plots_present_metrics_and_escapes_concepts(tmp_path):
  history = [{'iteration': 0, 'reward_mean': 0.5, 'ssl_loss': 11.0,
              'top_concepts': ['<script>'], 'best_concepts': ['duck']},
             {'iteration': 1, 'reward_mean': 0.6, 'ssl_loss': 10.5, 'knn_accuracy': 0.3}]
  path = report.build(str(tmp_path), history)
  files = set(os.listdir(tmp_path / 'report'))
  assert {'index.html', 'reward.png', 'loss.png', 'knn.png'} <= files
  assert 'policy.png' not in files  # no entropy logged, no empty plot
  page = open(path, encoding='utf-8').read()
  assert '&lt;script&gt;' in page and '<script>' not in page
  assert '2 iterations finished' in page
  assert not any(f.endswith('.tmp') for f in files)
