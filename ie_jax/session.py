"""What one launch does: explore, then (per `config.evaluate`) probe and score the result.

  run(config, workdir)   one explore run in WORKDIR; with `evaluate.final_probe`, a linear
                         and k-NN probe of its last checkpoint; on a world with a hidden
                         ground truth, the exploration precision and relevant policy mass.
  run with `evaluate.compare_modes='learned,random,...'`: one such run per concept mode in
                         WORKDIR/<mode>, sharing one world, and WORKDIR/report/index.html
                         comparing them side by side; with `evaluate.compare_seeds='0,1,2'`
                         one per mode and seed in WORKDIR/seed-<s>/<mode>, the report giving
                         each mode's mean and spread over the seeds.

A finished run launched again does no new work: exploring resumes at its end, and the
probe reads its cached features.
"""
import html
import json
import logging
import os

import numpy as np

from ie_jax import explorer, report
from ie_jax.eval import probe
from ie_jax.utils import atomic
from ie_jax.worlds import scoring

log = logging.getLogger(__name__)


def _modes(config) -> list[str]:
  return [m.strip() for m in config.evaluate.compare_modes.split(',') if m.strip()]


def _seeds(config) -> list[int]:
  text = config.evaluate.get('compare_seeds', '')
  try:
    return [int(s) for s in text.split(',') if s.strip()]
  except ValueError as e:
    raise ValueError(f"config.evaluate.compare_seeds must be comma-separated integers, "
                     f"got {text!r}.") from e


def run_one(config, workdir: str) -> dict:
  """Explores in `workdir`, then probes and scores per the config; returns the summary."""
  done = explorer.run(config, workdir)
  summary = {'mode': config.concepts.mode, 'iterations': len(done.state.history)}
  if not done.primary:
    return summary  # process 0 scores and reports
  sections = []
  if config.evaluate.final_probe and done.processes > 1:
    log.warning('The final probe runs in one process: python -m ie_jax.eval.probe '
                '--workdir=%s (see docs/SCALING.md).', workdir)
  elif config.evaluate.final_probe:
    result = probe.probe(config, workdir)
    summary['probe'] = {'linear': result['linear']['value'], 'knn': result['knn']['value'],
                        'metric': result['metric'], 'step': result['step']}
    sections.append(('Probe of the last checkpoint', _probe_html(summary['probe'])))
  if done.world and 'ground_truth' in done.world:
    summary['world'] = scoring.score(workdir, done.world, done.vocab, config)
    _world_plots(workdir, {config.concepts.mode: summary['world']})
    sections.append(('Against the world\'s ground truth', _world_html(summary['world'])))
  if sections:
    report.build(workdir, done.state.history, sections)
  _write_summary(os.path.join(workdir, 'report', 'summary.json'), summary)
  log.info('Run summary (%s): %s', workdir, json.dumps(summary)[:2000])
  return summary


def run(config, workdir: str) -> dict:
  """One run, or one per `config.evaluate.compare_modes` plus a comparison report."""
  modes = _modes(config)
  if not modes:
    return run_one(config, workdir)
  seeds = _seeds(config)
  runs = {}  # (mode, seed or None) -> summary
  for seed in seeds or [None]:
    for mode in modes:
      sub = config.copy_and_resolve_references()
      sub.concepts.mode = mode
      sub.evaluate.compare_modes = ''
      sub.evaluate.compare_seeds = ''
      # One world for all runs: built once, and the same web for each.
      sub.world_dir = config.world_dir or os.path.join(workdir, 'world')
      where = os.path.join(workdir, mode)
      if seed is not None:
        sub.seed = seed
        where = os.path.join(workdir, f'seed-{seed}', mode)
      log.info('Comparison: running mode %r (seed %d) in %s.', mode, sub.seed, where)
      runs[mode, seed] = run_one(sub, where)
  by_mode = {mode: s for (mode, _), s in runs.items()}
  path = seeds_report(workdir, runs) if seeds else compare_report(workdir, by_mode)
  log.info('Comparison report: %s', path)
  return runs if seeds else by_mode


def _fmt(value) -> str:
  return f'{value:.3f}' if isinstance(value, float) else html.escape(str(value))


def _probe_html(p: dict) -> str:
  return (f'<p>Linear probe {p["metric"]}: <b>{p["linear"]:.4f}</b>; '
          f'k-NN: <b>{p["knn"]:.4f}</b> (checkpoint {p["step"]}).</p>')


def _precision_series(world: dict) -> dict:
  return {int(k): v['precision'] for k, v in world['precision'].items()}


def _mass_series(world: dict) -> dict:
  return {int(k): v for k, v in world['relevant_mass'].items()}


def _world_plots(directory: str, worlds: dict) -> None:
  any_world = next(iter(worlds.values()))
  out = os.path.join(directory, 'report')
  report.lines_plot({m: _precision_series(w) for m, w in worlds.items()},
                    'exploration precision', 'target-relevant share of downloads',
                    os.path.join(out, 'precision.png'),
                    {'web base rate': any_world['web_relevant_share']})
  base = ({'vocabulary base rate': any_world['vocab_relevant_share']}
          if 'vocab_relevant_share' in any_world else {})
  report.lines_plot({m: _mass_series(w) for m, w in worlds.items()},
                    f'policy mass on concepts relevant to {any_world["target"]}',
                    'probability',
                    os.path.join(out, 'relevant_mass.png'), base)


def _world_html(world: dict) -> str:
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
    _world_plots(workdir, worlds)
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
  report.write_page(path, page)
  _write_summary(os.path.join(out, 'summary.json'), summaries)
  return path


def _write_summary(path: str, summary: dict) -> None:
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
    report.lines_plot(curves, 'exploration precision, mean over seeds',
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
  report.write_page(path, page)
  _write_summary(os.path.join(out, 'summary.json'),
                 {'by_mode': table,
                  'runs': [{'mode': m, 'seed': s, **v} for (m, s), v in runs.items()]})
  log.info('Over seeds: %s', json.dumps({m: {'mean': r['mean'], 'std': r['std']}
                                         for m, r in table.items()}))
  return path
