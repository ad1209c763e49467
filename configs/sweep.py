r"""Expands a config's `get_sweep()` into launch commands, one per line.

  python -m configs.sweep configs/flowers.py runs/flowers-sweep
  python -m configs.sweep configs/flowers.py runs/flowers-sweep | bash   # run them in turn
"""
import importlib.util
import os
import shlex
import sys


def commands(config_path: str, workroot: str) -> list[str]:
  spec = importlib.util.spec_from_file_location('swept_config', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{config_path} defines no get_sweep().')
  out = []
  for i, overrides in enumerate(module.get_sweep()):
    name = '-'.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in overrides.items()) or f'run{i}'
    flags = [f'--{k}={v}' for k, v in overrides.items()]
    out.append(shlex.join(['python', 'launch.py', f'--config={config_path}',
                           f'--workdir={os.path.join(workroot, name)}', *flags]))
  return out


if __name__ == '__main__':
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  print('\n'.join(commands(sys.argv[1], sys.argv[2])))
