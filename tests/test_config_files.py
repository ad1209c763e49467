"""Config files load for tools that run from any working directory (`config_files.load`)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_from(cwd: str, spec: str) -> subprocess.CompletedProcess:
  # A fresh interpreter: pytest's own sys.path holds the repository root, a user's does not.
  # This tree's config_files.py is loaded by its path (it imports nothing of ie_jax), so a
  # copy of the repository tests itself, not the installed one.
  module = os.path.join(ROOT, 'ie_jax', 'utils', 'config_files.py')
  code = ('import importlib.util as u; '
          f's = u.spec_from_file_location("config_files", {module!r}); '
          'config_files = u.module_from_spec(s); s.loader.exec_module(config_files); '
          f'c = config_files.load({spec!r}); print(c.seed, c.world)')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=120, check=False)


def test_the_demo_config_loads_from_another_directory(tmp_path):
  # configs/demo.py imports configs.common: found from /tmp as from the repository root.
  for spec in ('configs/demo.py:seed=2', os.path.join(ROOT, 'configs', 'demo.py') + ':seed=2'):
    done = load_from(str(tmp_path), spec)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ['2', 'demo'], done.stdout


def test_a_missing_config_names_both_places_looked(tmp_path):
  done = load_from(str(tmp_path), 'configs/nowhere.py')
  assert done.returncode != 0
  assert "No config file 'configs/nowhere.py'" in done.stderr and ROOT in done.stderr
