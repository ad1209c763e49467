r"""The paper's Table 1 from probe results: rows = runs, columns = targets.

  python -m ie_jax.eval.table runs/base_* runs/random_* runs/learned_* --out=results/table1

Each RUN_DIR holds `eval/probe_<step>.json` files (written by `ie_jax.eval.probe`); the
highest step per target is used. A row is a run name (the JSON's `run_name`, else the
directory's name), so per-target runs that share a name (`--run_name=random` on each) form
one row. Cells are percentages with the change against the base row (the first run, or
`--base`) in parentheses, e.g. `97.1 (+2.5)`; deltas are taken between the printed values,
so they always add up on the page. Prints the Markdown and writes `<out>.md` and `<out>.csv`.
"""
import argparse
import csv
import glob
import json
import os
import re
import sys

# Target name -> column title, in the paper's column order.
COLUMNS = {
    'birdsnap': 'Birdsnap',
    'oxford_flowers102': 'Flowers',
    'food101': 'Food',
    'oxford_iiit_pet': 'Pets',
    'voc2007': 'VOC2007',
    'fmow': 'fMoW',
}
MISSING = '–'  # en dash, as the paper marks runs without a number
MINUS = '−'    # the paper's minus sign in deltas


class TableError(ValueError):
  """The run directories do not make a table; the message says what was found."""


def read_run(run_dir: str, classifier: str = 'linear') -> list:
  """The latest probe per target in `run_dir`, as dicts (run, target, value, metric, step)."""
  paths = glob.glob(os.path.join(run_dir, 'eval', 'probe_*.json'))
  if not paths:
    eval_dir = os.path.join(run_dir, 'eval')
    found = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else 'no eval/ folder'
    raise TableError(f'{run_dir} holds no eval/probe_<step>.json (found {found}); run '
                     '`python -m ie_jax.eval.probe` on it first.')
  latest = {}
  for path in paths:
    match = re.fullmatch(r'probe_(\d+)\.json', os.path.basename(path))
    if not match:
      continue
    with open(path, encoding='utf-8') as f:
      result = json.load(f)
    if classifier not in result:
      raise TableError(f'{path} has no {classifier!r} result (keys {sorted(result)}).')
    entry = {
        'run': result.get('run_name') or os.path.basename(os.path.normpath(run_dir)),
        'target': result['target'],
        'value': float(result[classifier]['value']),
        'metric': result.get('metric', ''),
        'step': int(match.group(1)),
        'path': path,
    }
    if entry['target'] not in latest or entry['step'] > latest[entry['target']]['step']:
      latest[entry['target']] = entry
  return list(latest.values())


def _percent(value: float) -> float:
  return round(100 * value, 1)


def _delta(value: float, base: float) -> str:
  change = round(_percent(value) - _percent(base), 1)
  return f'{"+" if change >= 0 else MINUS}{abs(change):.1f}'


def build(entries: list, base: str | None = None):
  """(header, rows) of the table; rows keep the order in which runs first appear.

  Args:
    entries: from `read_run`, over all run directories.
    base: the run name the deltas are taken against (default: the first run).
  """
  runs, cells = [], {}
  for e in entries:
    if e['run'] not in runs:
      runs.append(e['run'])
    key = (e['run'], e['target'])
    if key in cells:
      raise TableError(f'Two probes for run {e["run"]!r} on target {e["target"]!r}: '
                       f'{cells[key]["path"]} and {e["path"]}. Give the runs distinct '
                       'run names (probe --run_name).')
    cells[key] = e
  base = runs[0] if base is None else base
  if base not in runs:
    raise TableError(f'No run named {base!r} to take deltas against; found {runs}.')
  present = {e['target'] for e in entries}
  targets = [t for t in COLUMNS if t in present]
  targets += [t for t in dict.fromkeys(e['target'] for e in entries) if t not in COLUMNS]
  header = ['Model'] + [COLUMNS.get(t, t) for t in targets]
  rows = []
  for run in runs:
    row = [run]
    for t in targets:
      if (run, t) not in cells:
        row.append(MISSING)
        continue
      value = cells[(run, t)]['value']
      text = f'{_percent(value):.1f}'
      if run != base and (base, t) in cells:
        text += f' ({_delta(value, cells[(base, t)]["value"])})'
      row.append(text)
    rows.append(row)
  return header, rows


def notes(entries: list, base: str, classifier: str) -> list:
  """Lines under the table: what the numbers are."""
  kind = 'Linear-probe' if classifier == 'linear' else 'k-NN (k=20, T=0.07)'
  lines = [f'{kind} results in percent; in parentheses, the change against {base!r}.']
  metrics = {}
  for e in entries:
    metrics.setdefault(e['metric'], set()).add(COLUMNS.get(e['target'], e['target']))
  for metric, columns in sorted(metrics.items()):
    lines.append(f'{", ".join(sorted(columns))}: {metric}.')
  return lines


def markdown(header: list, rows: list, footer: list = ()) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  if footer:
    lines += [''] + [f'- {line}' for line in footer]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('run_dirs', nargs='+', help='run directories with eval/probe_*.json')
  parser.add_argument('--out', default='table', help='writes <out>.md and <out>.csv')
  parser.add_argument('--base', default=None, help='run name for deltas (default: first)')
  parser.add_argument('--classifier', default='linear', choices=('linear', 'knn'))
  args = parser.parse_args(argv)
  entries = [e for d in args.run_dirs for e in read_run(d, args.classifier)]
  header, rows = build(entries, args.base)
  text = markdown(header, rows, notes(entries, args.base or rows[0][0], args.classifier))
  print(text, end='')
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(f'{args.out}.md', 'w', encoding='utf-8') as f:
    f.write(text)
  with open(f'{args.out}.csv', 'w', newline='', encoding='utf-8') as f:
    csv.writer(f).writerows([header] + rows)
  return text


if __name__ == '__main__':
  try:
    main()
  except TableError as e:
    sys.exit(f'error: {e}')
