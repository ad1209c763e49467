"""What one launch does: explore, then (per `config.evaluate`) probe and score the result.

  run(config, workdir)   one explore run in WORKDIR; with `evaluate.final_probe`, a linear
                         and k-NN probe of its last checkpoint; on a world with a hidden
                         ground truth, the exploration precision and relevant policy mass.
  run with `evaluate.compare_modes='learned,random,...'`: one such run per concept mode in
                         WORKDIR/<mode>, sharing one world, and WORKDIR/report/index.html
                         comparing them side by side.

A finished run launched again does no new work: exploring resumes at its end, and the
probe reads its cached features.
"""
import html
import json
import logging
import os

from ie_jax import explorer, report
from ie_jax.concepts import cache
from ie_jax.eval import probe
from ie_jax.worlds import scoring

log = logging.getLogger(__name__)


def _modes(config) -> list[str]:
  return [m.strip() for m in config.evaluate.compare_modes.split(',') if m.strip()]


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
  summaries = {}
  for mode in modes:
    sub = config.copy_and_resolve_references()
    sub.concepts.mode = mode
    sub.evaluate.compare_modes = ''
    # One world for all modes: built once, and the same web for each.
    sub.world_dir = config.world_dir or os.path.join(workdir, 'world')
    log.info('Comparison: running mode %r in %s.', mode, os.path.join(workdir, mode))
    summaries[mode] = run_one(sub, os.path.join(workdir, mode))
  path = compare_report(workdir, summaries)
  log.info('Comparison report: %s', path)
  return summaries


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
  cache.atomic_write(path, lambda f: f.write(json.dumps(summary, indent=2).encode()))
