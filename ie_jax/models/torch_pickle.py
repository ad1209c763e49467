"""Reads a PyTorch `torch.save` zip archive into NumPy arrays, without torch.

The core install has no torch, yet users bring the official MoCo v3 checkpoint. The
unpickler below admits only the globals a checkpoint of tensors and plain values needs,
so a hostile file cannot run code through `pickle`.
"""
import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

STORAGE_DTYPES = {
    'FloatStorage': np.float32,
    'DoubleStorage': np.float64,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class TorchPickleError(ValueError):
  """The file is not a PyTorch zip checkpoint this reader understands."""


def _rebuild_tensor(storage, offset, size, stride, *unused):
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
  return np.array(view)  # a contiguous copy


def _rebuild_parameter(data, *unused):
  return data


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._path = path
    self._storages = {}

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if (module, name) == ('torch._utils', '_rebuild_parameter'):
      return _rebuild_parameter
    if module == 'torch' and name in STORAGE_DTYPES:
      return name
    raise TorchPickleError(
        f'{self._path}: refusing to unpickle {module}.{name}; only tensors, dicts and plain '
        'values are read from checkpoints.')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
      raise TorchPickleError(f'{self._path}: unknown persistent id {pid!r}.')
    _, kind, key, _, numel = pid[:5]
    if kind not in STORAGE_DTYPES:
      raise TorchPickleError(f'{self._path}: unsupported storage type {kind!r}.')
    if key not in self._storages:
      raw = self._archive.read(f'{self._prefix}data/{key}')
      data = np.frombuffer(raw, dtype=STORAGE_DTYPES[kind])
      if data.size < numel:
        raise TorchPickleError(f'{self._path}: storage {key} is truncated.')
      self._storages[key] = data
    return self._storages[key]


def load(path) -> dict:
  """Loads a `torch.save` archive (PyTorch >= 1.6 zip format) with tensors as ndarrays."""
  path = str(path)
  if not zipfile.is_zipfile(path):
    raise TorchPickleError(
        f'{path} is not a PyTorch zip archive (the legacy pre-1.6 format is not supported; '
        're-save it with torch.save from a recent PyTorch).')
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pickles) != 1:
      raise TorchPickleError(f'{path}: expected one data.pkl in the archive, found {pickles}.')
    prefix = pickles[0][:-len('data.pkl')]
    order = f'{prefix}byteorder'
    if order in archive.namelist() and archive.read(order).strip() != b'little':
      raise TorchPickleError(f'{path}: big-endian checkpoints are not supported.')
    with archive.open(pickles[0]) as f:
      return _Unpickler(f, archive, prefix, path).load()
