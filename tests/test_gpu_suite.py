"""`bench/gpu.sh`, the one command for every GPU figure, runs end to end: a dry run at tiny
sizes on the CPU, so that the first GPU a session gets finds a script that works."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_gpu_suite_runs_dry_on_the_cpu(tmp_path):
  env = dict(os.environ, IE_JAX_DRY_RUN='1', PYTHON=sys.executable, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # one CPU device, as a real machine has one GPU
  done = subprocess.run(['bash', 'bench/gpu.sh', str(tmp_path)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=1200, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  found = {}
  for name in ('train_step', 'reward', 'policy', 'input_pipeline'):
    with open(tmp_path / f'{name}.json', encoding='utf-8') as f:
      found[name] = json.load(f)
  dtypes = {row['dtype'] for row in found['train_step']['results']}
  assert dtypes == {'float32', 'bfloat16'}
  assert found['reward']['results'] and found['input_pipeline']['results']
  assert found['policy']['rows']
