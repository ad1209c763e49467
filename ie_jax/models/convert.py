"""Loads the official MoCo v3 PyTorch checkpoint (`r-50-100ep.pth.tar`) into a TrainState.

The official `state_dict` holds `module.base_encoder.*` (ResNet + projector as `fc`),
`module.momentum_encoder.*` (same layout) and `module.predictor.*`. Every Flax variable must
find its tensor with the same shape and every tensor must be used: a checkpoint of another
architecture fails naming the first mismatch instead of loading partially.
"""
import re

import jax
import numpy as np

from ie_jax.models import torch_pickle

# MLP layer names -> PyTorch nn.Sequential indices (Linear 0, BN 1, ReLU 2, Linear 3, BN 4).
_MLP_INDEX = {'linear0': '0', 'bn0': '1', 'linear1': '3', 'bn1': '4'}
_RESNET_RENAME = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}
LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
         'mean': 'running_mean', 'var': 'running_var'}
_PREFIX = {'encoder': '', 'projector': 'fc.', 'predictor': ''}


class CheckpointMismatchError(ValueError):
  """The checkpoint does not match the configured architecture."""


def torch_key(path: tuple[str, ...]) -> str:
  """Maps a Flax variable path, e.g. ('encoder', 'layer1_0', 'bn1', 'scale'), to torchvision's."""
  part, *modules, leaf = path
  if part not in _PREFIX:
    raise KeyError(f'Unknown top-level module {part!r} in {path}.')
  if part == 'encoder':
    names = [re.sub(r'^layer(\d)_(\d+)$', r'layer\1.\2', n) for n in modules]
    names = [_RESNET_RENAME.get(n, n) for n in names]
  else:
    names = [_MLP_INDEX[n] for n in modules]
  return _PREFIX[part] + '.'.join(names + [LEAF[leaf]])


def to_flax(leaf_name: str, value: np.ndarray) -> np.ndarray:
  """A PyTorch tensor in the layout of the Flax leaf `leaf_name`."""
  if leaf_name == 'kernel' and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf_name == 'kernel' and value.ndim == 2:
    return value.T  # (out, in) -> (in, out)
  return value


def _fill(template, state_dict: dict, prefixes: dict, used: set, where: str):
  """Returns `template`'s tree with each leaf read from `state_dict`."""

  def read(path, leaf):
    names = tuple(p.key for p in path)
    key = prefixes[names[0]] + torch_key(names)
    if key not in state_dict:
      raise CheckpointMismatchError(
          f'{where}: the checkpoint has no tensor {key!r} for parameter '
          f'{"/".join(names)} {tuple(leaf.shape)}: is it another architecture?')
    value = to_flax(names[-1], np.asarray(state_dict[key]))
    if value.shape != tuple(leaf.shape):
      raise CheckpointMismatchError(
          f'{where}: parameter {"/".join(names)} expects shape {tuple(leaf.shape)}, but '
          f'{key!r} converts to {value.shape}: the checkpoint is another architecture.')
    used.add(key)
    return value.astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(read, template)


def convert_state_dict(state_dict: dict, template, where: str = 'checkpoint') -> dict:
  """Converts an official-layout state_dict.

  Args:
    state_dict: keys `module.{base_encoder,momentum_encoder,predictor}.*` -> arrays.
    template: an object with `params`, `batch_stats`, `momentum_params` and
      `momentum_batch_stats` (a TrainState, or its `jax.eval_shape`), giving the structure.
    where: a name for error messages.

  Returns:
    Those four trees as NumPy arrays.
  """
  online = {'encoder': 'module.base_encoder.', 'projector': 'module.base_encoder.',
            'predictor': 'module.predictor.'}
  momentum = {'encoder': 'module.momentum_encoder.', 'projector': 'module.momentum_encoder.'}
  used = set()
  out = {
      'params': _fill(template.params, state_dict, online, used, where),
      'batch_stats': _fill(template.batch_stats, state_dict, online, used, where),
      'momentum_params': _fill(template.momentum_params, state_dict, momentum, used, where),
      'momentum_batch_stats': _fill(template.momentum_batch_stats, state_dict, momentum,
                                    used, where),
  }
  left = sorted(k for k in state_dict if k not in used and not k.endswith('num_batches_tracked'))
  if left:
    raise CheckpointMismatchError(
        f'{where}: {len(left)} tensors have no place in the configured model, e.g. '
        f'{left[:5]}: the checkpoint is another architecture.')
  return out


def load_official(path, state, tx):
  """Returns `state` with weights from the official MoCo v3 checkpoint at `path`.

  The step restarts at 0 and the optimizer state is fresh (`tx.init`): the official files
  are a pre-training result, not a run to resume.
  """
  checkpoint = torch_pickle.load(path)
  if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
    raise CheckpointMismatchError(
        f'{path}: expected a dict with a "state_dict" entry (the official MoCo v3 layout).')
  trees = convert_state_dict(checkpoint['state_dict'], state, where=str(path))
  return state.replace(step=np.zeros((), np.int32), opt_state=tx.init(trees['params']), **trees)
