"""Results table: Table 1's layout and numbers from probe JSONs of small run directories."""
import csv
import json
import os

import pytest

from ie_jax.eval import table

# Table 1 of the paper (linear probe): base = MoCo-v3 (ImageNet + target).
PAPER = {
    'base': {'oxford_flowers102': 94.6, 'food101': 78.3, 'oxford_iiit_pet': 85.3, 'voc2007': 58.0},
    'random': {'oxford_flowers102': 95.3, 'food101': 77.0, 'oxford_iiit_pet': 85.6,
               'voc2007': 70.2},
    'learned': {'oxford_flowers102': 97.1, 'food101': 80.5, 'oxford_iiit_pet': 86.8,
                'voc2007': 68.5},
}


def write_probe(run_dir, step, target, value, run_name=None):
  os.makedirs(os.path.join(run_dir, 'eval'), exist_ok=True)
  result = {'step': step, 'target': target,
            'metric': 'mAP (one-vs-rest)' if target == 'voc2007' else 'top-1 accuracy',
            'linear': {'value': value / 100}, 'knn': {'value': value / 200}}
  if run_name:
    result['run_name'] = run_name
  with open(os.path.join(run_dir, 'eval', f'probe_{step}.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f)


def make_runs(root):
  """One directory per (run, target), as the paper trains each target separately."""
  dirs = []
  for run, values in PAPER.items():
    for target_name, value in values.items():
      run_dir = os.path.join(root, f'{run}_{target_name}')
      write_probe(run_dir, 40, target_name, value, run_name=run)
      write_probe(run_dir, 8, target_name, 1.0, run_name=run)  # an earlier, worse step
      dirs.append(run_dir)
  return dirs


def test_table_reproduces_table_1_layout(tmp_path, capsys):
  dirs = make_runs(str(tmp_path))
  text = table.main(dirs + ['--out', str(tmp_path / 'out' / 'table1')])
  assert capsys.readouterr().out == text
  lines = text.splitlines()
  assert lines[:5] == [
      '| Model | Flowers | Food | Pets | VOC2007 |',
      '|---|---|---|---|---|',
      '| base | 94.6 | 78.3 | 85.3 | 58.0 |',
      '| random | 95.3 (+0.7) | 77.0 (−1.3) | 85.6 (+0.3) | 70.2 (+12.2) |',
      '| learned | 97.1 (+2.5) | 80.5 (+2.2) | 86.8 (+1.5) | 68.5 (+10.5) |',
  ]
  assert "- VOC2007: mAP (one-vs-rest)." in lines
  assert "- Flowers, Food, Pets: top-1 accuracy." in lines
  with open(tmp_path / 'out' / 'table1.md', encoding='utf-8') as f:
    assert f.read() == text
  with open(tmp_path / 'out' / 'table1.csv', newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['Model', 'Flowers', 'Food', 'Pets', 'VOC2007']
  assert rows[2] == ['random', '95.3 (+0.7)', '77.0 (−1.3)', '85.6 (+0.3)', '70.2 (+12.2)']


def test_directory_names_missing_cells_and_other_base(tmp_path):
  write_probe(str(tmp_path / 'moco'), 3, 'oxford_flowers102', 94.6)   # no run_name
  write_probe(str(tmp_path / 'ours'), 5, 'oxford_flowers102', 98.4)
  write_probe(str(tmp_path / 'ours'), 6, 'shapes', 50.04)  # not a paper target: last column
  entries = [e for d in ('moco', 'ours') for e in table.read_run(str(tmp_path / d))]
  header, rows = table.build(entries, base='ours')
  assert header == ['Model', 'Flowers', 'shapes']
  # The probe JSON lacks run_name, so the directory names the row.
  assert rows == [['moco', '94.6 (−3.8)', '–'], ['ours', '98.4', '50.0']]


def test_bad_run_directories(tmp_path):
  with pytest.raises(table.TableError, match=r'holds no eval/probe_<step>.json \(found no eval/'):
    table.read_run(str(tmp_path))
  write_probe(str(tmp_path / 'a'), 1, 'food101', 70.0, run_name='x')
  write_probe(str(tmp_path / 'b'), 1, 'food101', 71.0, run_name='x')
  entries = table.read_run(str(tmp_path / 'a')) + table.read_run(str(tmp_path / 'b'))
  with pytest.raises(table.TableError, match="Two probes for run 'x' on target 'food101'"):
    table.build(entries)
  with pytest.raises(table.TableError, match=r"No run named 'y'.*found \['x'\]"):
    table.build(entries[:1], base='y')
