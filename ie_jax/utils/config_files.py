"""Reads a config file the way `launch.py --config=FILE[:ARGS]` does, for tools without absl."""
import importlib.util
import os
import sys


def load(spec: str):
  """`get_config(ARGS)` of the config file in `spec` ('configs/demo.py:seed=1').

  A relative path that does not exist from the working directory is tried from the
  repository root, so tools run from anywhere find `configs/`. A config in a package
  (`configs/__init__.py`) imports its siblings as `configs.common`, as `launch.py` lets it:
  the package's parent is put on the import path, as running launch.py from there would.
  """
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(root, path)):
      path = os.path.join(root, path)
    else:
      raise FileNotFoundError(f'No config file {path!r} (from {os.getcwd()} or {root}).')
  package = os.path.dirname(os.path.abspath(path))
  if os.path.exists(os.path.join(package, '__init__.py')):
    parent = os.path.dirname(package)
    if parent not in sys.path:
      sys.path.insert(0, parent)
  module_spec = importlib.util.spec_from_file_location('ie_jax_loaded_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
