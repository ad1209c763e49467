"""Where and how the benchmarks write their JSON: one place, one format."""
import json
import os
import platform
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def write(benchmark: str, name: str, settings: dict, results: list, out: str = '') -> str:
  """Writes {benchmark, settings..., machine, command, results} to `out` or results/NAME.json."""
  path = out or os.path.join(RESULTS, name + '.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Written aside and renamed: a benchmark that rewrites its file after every point and is
  # stopped mid-write keeps the last whole file.
  with open(path + '.tmp', 'w') as f:
    json.dump({'benchmark': benchmark, **settings,
               'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                           'cpu_count': os.cpu_count()},
               'command': ' '.join(['python'] + sys.argv), 'results': results}, f, indent=1)
  os.replace(path + '.tmp', path)
  print(f'wrote {path}')
  return path
