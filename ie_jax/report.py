"""The run report: `WORKDIR/report/index.html` with PNG plots, rebuilt every iteration.

It shows what the explorer is learning: reward and loss curves over iterations, the
concepts it queried and scored best (as the paper's Figs. 3/6), and grids of the best and
worst candidates of each iteration by reward (as Fig. 4). A run on a world with a hidden
ground truth adds its precision and relevant policy mass (`world_plots`, `world_html`);
`compare_report` and `seeds_report` put several runs side by side (modes, seeds), with
`seed_table`'s mean and spread; `write_summary` keeps each page's numbers as JSON.
"""
import html
import io
import json
import logging
import os

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

from ie_jax.utils import atomic

log = logging.getLogger(__name__)


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


def _fmt(value) -> str:
  return f'{value:.3f}' if isinstance(value, float) else html.escape(str(value))


def probe_html(p: dict) -> str:
  return (f'<p>Linear probe {p["metric"]}: <b>{p["linear"]:.4f}</b>; '
          f'k-NN: <b>{p["knn"]:.4f}</b> (checkpoint {p["step"]}).</p>')


def _precision_series(world: dict) -> dict:
  return {int(k): v['precision'] for k, v in world['precision'].items()}


def _mass_series(world: dict) -> dict:
  return {int(k): v for k, v in world['relevant_mass'].items()}


def world_plots(directory: str, worlds: dict) -> None:
  any_world = next(iter(worlds.values()))
  out = os.path.join(directory, 'report')
  lines_plot({m: _precision_series(w) for m, w in worlds.items()},
                    'exploration precision', 'target-relevant share of downloads',
                    os.path.join(out, 'precision.png'),
                    {'web base rate': any_world['web_relevant_share']})
  base = ({'vocabulary base rate': any_world['vocab_relevant_share']}
          if 'vocab_relevant_share' in any_world else {})
  lines_plot({m: _mass_series(w) for m, w in worlds.items()},
                    f'policy mass on concepts relevant to {any_world["target"]}',
                    'probability',
                    os.path.join(out, 'relevant_mass.png'), base)


def world_html(world: dict) -> str:
  rows = ''.join(
      f'<tr><td>{it}</td><td>{v["stored"]}</td><td>{v["relevant"]}</td>'
      f'<td>{_fmt(v["precision"])}</td><td>{_fmt(world["relevant_mass"].get(it, ""))}</td></tr>'
      for it, v in sorted(world['precision'].items(), key=lambda kv: int(kv[0])))
  return ('<img src="precision.png" alt="precision"><img src="relevant_mass.png" '
          f'alt="relevant mass"><p>Base rates: web {world["web_relevant_share"]:.3f}, '
          f'vocabulary {world.get("vocab_relevant_share", float("nan")):.3f}.</p>'
          '<table><tr><th>iteration</th><th>stored</th><th>relevant</th><th>precision</th>'
          f'<th>relevant policy mass</th></tr>{rows}</table>')


def _last(series: dict):
  return series[max(series)] if series else float('nan')


def compare_report(workdir: str, summaries: dict) -> str:
  """WORKDIR/report/index.html: the modes' curves and final numbers side by side."""
  worlds = {m: s['world'] for m, s in summaries.items() if 'world' in s}
  if worlds:
    world_plots(workdir, worlds)
  rows = []
  for mode, s in summaries.items():
    w, p = s.get('world'), s.get('probe', {})
    prec = _precision_series(w) if w else {}
    rows.append(
        f'<tr><td><a href="../{html.escape(mode)}/report/index.html">{html.escape(mode)}</a>'
        f'</td><td>{_fmt(_last(prec))}</td>'
        f'<td>{_fmt(sum(prec.values()) / len(prec) if prec else float("nan"))}</td>'
        f'<td>{_fmt(_last(_mass_series(w)) if w else float("nan"))}</td>'
        f'<td>{_fmt(p.get("knn", float("nan")))}</td>'
        f'<td>{_fmt(p.get("linear", float("nan")))}</td></tr>')
  plots = ('<img src="precision.png" alt="precision"><img src="relevant_mass.png" '
           'alt="relevant mass">') if worlds else ''
  page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ie-jax comparison</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border-bottom:1px solid #ddd;
padding:4px;font-size:13px}}</style></head><body>
<h1>Exploration modes compared: {html.escape(os.path.abspath(workdir))}</h1>{plots}
<table><tr><th>mode</th><th>last-iteration precision</th><th>mean precision</th>
<th>last relevant policy mass</th><th>k-NN accuracy</th><th>linear probe accuracy</th></tr>
{''.join(rows)}</table></body></html>"""
  out = os.path.join(workdir, 'report')
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'index.html')
  write_page(path, page)
  write_summary(os.path.join(out, 'summary.json'), summaries)
  return path


def write_summary(path: str, summary: dict) -> None:
  atomic.write(path, lambda f: f.write(json.dumps(summary, indent=2).encode()))


def mean_precision(summary: dict) -> float:
  prec = _precision_series(summary['world']) if 'world' in summary else {}
  return float(np.mean(list(prec.values()))) if prec else float('nan')


def seed_table(runs: dict) -> dict:
  """mode -> {'seeds': {seed: {mean_precision, knn, last_mass}}, 'mean': {...}, 'std': {...}}."""
  out = {}
  for (mode, seed), summary in runs.items():
    mass = _mass_series(summary['world']) if 'world' in summary else {}
    out.setdefault(mode, {'seeds': {}})['seeds'][seed] = {
        'mean_precision': mean_precision(summary),
        'knn': summary.get('probe', {}).get('knn', float('nan')),
        'last_relevant_mass': _last(mass) if mass else float('nan')}
  for row in out.values():
    for stat, fn in (('mean', np.mean), ('std', np.std)):
      row[stat] = {k: float(fn([v[k] for v in row['seeds'].values()]))
                   for k in ('mean_precision', 'knn', 'last_relevant_mass')}
  return out


def seeds_report(workdir: str, runs: dict) -> str:
  """WORKDIR/report/index.html over seeds: each mode's mean precision curve (and each seed's),
  and a table of every seed with the mean and spread."""
  table = seed_table(runs)
  worlds = {}
  for (mode, seed), summary in runs.items():
    if 'world' in summary:
      worlds.setdefault(mode, []).append(_precision_series(summary['world']))
  out = os.path.join(workdir, 'report')
  if worlds:
    curves = {}
    for mode, series in worlds.items():
      its = sorted(set().union(*series))
      curves[f'{mode} (mean of {len(series)})'] = {
          it: float(np.mean([s[it] for s in series if it in s])) for it in its}
    any_world = next(s['world'] for s in runs.values() if 'world' in s)
    lines_plot(curves, 'exploration precision, mean over seeds',
                      'target-relevant share of downloads', os.path.join(out, 'precision.png'),
                      {'web base rate': any_world['web_relevant_share']})
  rows = []
  for mode, row in table.items():
    for seed, v in sorted(row['seeds'].items()):
      rows.append(f'<tr><td><a href="../seed-{seed}/{html.escape(mode)}/report/index.html">'
                  f'{html.escape(mode)}</a></td><td>{seed}</td>'
                  f'<td>{_fmt(v["mean_precision"])}</td><td>{_fmt(v["last_relevant_mass"])}'
                  f'</td><td>{_fmt(v["knn"])}</td></tr>')
    m, sd = row['mean'], row['std']
    rows.append(f'<tr><th>{html.escape(mode)}</th><th>mean +- sd</th>'
                + ''.join(f'<th>{m[k]:.3f} +- {sd[k]:.3f}</th>'
                          for k in ('mean_precision', 'last_relevant_mass', 'knn')) + '</tr>')
  plots = '<img src="precision.png" alt="precision">' if worlds else ''
  page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ie-jax seeds</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border-bottom:1px solid #ddd;
padding:4px;font-size:13px}}</style></head><body>
<h1>Exploration modes over seeds: {html.escape(os.path.abspath(workdir))}</h1>{plots}
<table><tr><th>mode</th><th>seed</th><th>mean precision</th><th>last relevant policy mass</th>
<th>k-NN accuracy</th></tr>{''.join(rows)}</table></body></html>"""
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'index.html')
  write_page(path, page)
  write_summary(os.path.join(out, 'summary.json'),
                 {'by_mode': table,
                  'runs': [{'mode': m, 'seed': s, **v} for (m, s), v in runs.items()]})
  log.info('Over seeds: %s', json.dumps({m: {'mean': r['mean'], 'std': r['std']}
                                         for m, r in table.items()}))
  return path
