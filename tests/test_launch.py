"""The launcher end to end: a tiny run writes checkpoints, metrics and TensorBoard files."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_tiny_pretrain_run_writes_checkpoints_and_logs(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/tiny.py:epochs=1,examples=32',
       f'--workdir={tmp_path}', '--mode=pretrain'], cwd=ROOT, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  rows = [json.loads(l) for l in open(tmp_path / 'logs' / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == [2]
  assert 0 < rows[0]['loss'] < 20
  assert abs(rows[0]['lr'] - 0.8 * 16 / 256) < 1e-7  # base_lr * batch / 256
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'logs'))
