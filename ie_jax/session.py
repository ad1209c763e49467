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
import json
import logging
import os

from ie_jax import explore, report
from ie_jax.eval import probe
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
  done = explore.run(config, workdir)
  summary = {'mode': config.concepts.mode, 'iterations': len(done.state.history)}
  if not done.primary:
    return summary  # process 0 scores and reports
  sections = []
  if config.evaluate.final_probe and done.comm.alone(
      f'python -m ie_jax.eval.probe --workdir={workdir}'):
    result = probe.probe(done.config, workdir)  # its target resolved to the world's
    summary['probe'] = {'linear': result['linear']['value'], 'knn': result['knn']['value'],
                        'metric': result['metric'], 'step': result['step']}
    sections.append(('Probe of the last checkpoint', report.probe_html(summary['probe'])))
  if done.world and 'ground_truth' in done.world:
    summary['world'] = scoring.score(workdir, done.world, done.vocab, config)
    report.world_plots(workdir, {config.concepts.mode: summary['world']})
    sections.append(('Against the world\'s ground truth', report.world_html(summary['world'])))
  if sections:
    report.build(workdir, done.state.history, sections)
  report.write_summary(os.path.join(workdir, 'report', 'summary.json'), summary)
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
  path = (report.seeds_report(workdir, runs) if seeds else
          report.compare_report(workdir, by_mode))
  log.info('Comparison report: %s', path)
  return runs if seeds else by_mode
