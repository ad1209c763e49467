"""The run report: `WORKDIR/report/index.html` with PNG plots, rebuilt every iteration.

It shows what the explorer is learning: reward and loss curves over iterations, the
concepts it queried and scored best (as the paper's Figs. 3/6), and grids of the best and
worst candidates of each iteration by reward (as Fig. 4).
"""
import html
import io
import os

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

from ie_jax.utils import atomic


def _curve(history: list, keys: list[str], title: str, path: str) -> bool:
  series = {k: {h['iteration']: h[k] for h in history
                if isinstance(h.get(k), (int, float)) and np.isfinite(h[k])} for k in keys}
  if not any(series.values()):
    return False
  lines_plot(series, title, '', path)
  return True


def candidate_grid(store, iteration: int, rewards: np.ndarray, path: str, n: int = 8,
                   cell: int = 64) -> None:
  """Top-n (first row) and bottom-n (second row) candidates of `iteration` by reward."""
  if len(rewards) == 0:
    return
  order = np.argsort(-rewards, kind='stable')
  rows = [order[:n], order[::-1][:n]]
  grid = Image.new('RGB', (cell * n, cell * 2), 'white')
  for r, indices in enumerate(rows):
    for c, index in enumerate(indices):
      with Image.open(io.BytesIO(store.read(iteration, int(index)))) as im:
        grid.paste(im.convert('RGB').resize((cell, cell)), (c * cell, r * cell))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  grid.save(path)


def lines_plot(series: dict, title: str, ylabel: str, path: str,
               baselines: dict | None = None) -> None:
  """One line per name in `series` ({iteration: value}), dashed horizontal baselines."""
  fig, ax = plt.subplots(figsize=(5.5, 3.4))
  for name, points in series.items():
    if points:
      x = sorted(points)
      ax.plot(x, [points[i] for i in x], marker='o', label=name)
  for name, value in (baselines or {}).items():
    ax.axhline(value, linestyle='--', color='grey', linewidth=1)
    ax.annotate(name, (0, value), fontsize=7, color='grey', va='bottom')
  ax.set_xlabel('iteration')
  ax.set_ylabel(ylabel)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_page(path: str, page: str) -> None:
  # Only the primary process writes the report: a page killed mid-write is cleared next time.
  atomic.write(path, lambda f: f.write(page.encode()), single_writer=True)


def build(workdir: str, history: list, sections: tuple = ()) -> str:
  """Writes the report for the finished iterations in `history`; returns index.html's path.

  `sections` are (title, HTML) pairs shown after the plots, e.g. a probe's results.
  """
  out = os.path.join(workdir, 'report')
  os.makedirs(out, exist_ok=True)
  plots = []
  for name, keys, title in (
      ('reward.png', ['reward_mean', 'reward_median', 'reward_max'], 'candidate rewards'),
      ('loss.png', ['ssl_loss'], 'MoCo v3 loss'),
      ('knn.png', ['knn_accuracy'], 'k-NN accuracy on target test images (monitoring)'),
      ('policy.png', ['policy_entropy'], 'policy entropy (nats)'),
      ('downloads.png', ['download_ok', 'candidates', 'replay_size'], 'images')):
    if _curve(history, keys, title, os.path.join(out, name)):
      plots.append(name)
  rows = []
  for h in history:
    grid = f'grids/iteration-{h["iteration"]:05d}.png'
    image = (f'<img src="{grid}" alt="best and worst candidates">'
             if os.path.exists(os.path.join(out, grid)) else '')
    rows.append(
        f'<tr><td>{h["iteration"]}</td>'
        f'<td>{html.escape(", ".join(map(str, h.get("top_concepts", []))))}</td>'
        f'<td>{html.escape(", ".join(map(str, h.get("best_concepts", []))))}</td>'
        f'<td>{h.get("reward_mean", float("nan")):.4f}</td><td>{image}</td></tr>')
  page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ie-jax run</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border-bottom:1px solid #ddd;
padding:4px;vertical-align:top;font-size:13px}} img{{max-width:100%}}</style></head><body>
<h1>Internet Explorer run: {html.escape(os.path.abspath(workdir))}</h1>
<p>{len(history)} iterations finished.</p>
{''.join(f'<img src="{p}" alt="{p}">' for p in plots)}
{''.join(f'<h2>{html.escape(title)}</h2>{body}' for title, body in sections)}
<h2>Iterations</h2>
<table><tr><th>it</th><th>most probable concepts before sampling</th>
<th>best-scoring queries</th><th>mean reward</th>
<th>best (top row) and worst (bottom row) candidates</th></tr>
{''.join(rows)}</table></body></html>"""
  path = os.path.join(out, 'index.html')
  write_page(path, page)
  return path
