"""Reads a config file the way `launch.py --config=FILE[:ARGS]` does, for tools without absl."""
import importlib.util
import os


def load(spec: str):
  """`get_config(ARGS)` of the config file in `spec` ('configs/demo.py:seed=1').

  A relative path that does not exist from the working directory is tried from the
  repository root, so tools run from anywhere find `configs/`.
  """
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(root, path)):
      path = os.path.join(root, path)
    else:
      raise FileNotFoundError(f'No config file {path!r} (from {os.getcwd()} or {root}).')
  module_spec = importlib.util.spec_from_file_location('ie_jax_loaded_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
