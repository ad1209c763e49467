"""Reads a PyTorch `torch.save` file into NumPy arrays, without torch.

The core install has no torch, yet users bring the official MoCo v3 checkpoint, and the
demo's ImageNet start ships in the legacy (pre-1.6) format. The unpicklers below admit only
the globals a checkpoint of tensors and plain values needs, so a hostile file cannot run
code through `pickle`.
"""
import collections
import io
import pickle
import struct
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
  """The file is not a PyTorch checkpoint this reader understands."""


def _rebuild_tensor(storage, offset, size, stride, *unused):
  size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
  # as_strided does not check bounds: a hostile size or stride would read outside the
  # storage.
  if (len(size) != len(stride) or offset < 0 or min(size, default=1) < 0
      or min(stride, default=0) < 0 or (0 not in size and offset + sum(
          (n - 1) * st for n, st in zip(size, stride)) >= storage.size)):
    raise TorchPickleError(f'a tensor of size {size}, stride {stride} at offset {offset} '
                           f'does not fit its storage of {storage.size} elements.')
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

  def _storage_id(self, pid) -> tuple[str, str, int]:
    """(storage type, key, element count) of a persistent id, checked."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
      raise TorchPickleError(f'{self._path}: unknown persistent id {pid!r}.')
    _, kind, key, _, numel = pid[:5]
    if kind not in STORAGE_DTYPES:
      raise TorchPickleError(f'{self._path}: unsupported storage type {kind!r}.')
    return kind, key, numel

  def persistent_load(self, pid):
    kind, key, numel = self._storage_id(pid)
    if key not in self._storages:
      raw = self._archive.read(f'{self._prefix}data/{key}')
      data = np.frombuffer(raw, dtype=STORAGE_DTYPES[kind])
      if data.size < numel:
        raise TorchPickleError(f'{self._path}: storage {key} is truncated.')
      self._storages[key] = data
    return self._storages[key]


def load(path) -> dict:
  """Loads a `torch.save` file (the zip format of PyTorch >= 1.6, or the legacy one) with
  tensors as ndarrays."""
  path = str(path)
  if not zipfile.is_zipfile(path):
    return _load_legacy(path)
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


# The legacy format (torch.save before 1.6, or _use_new_zipfile_serialization=False) is a
# run of pickles: this magic number, the protocol version, a dict of system facts, the
# object (storages as persistent ids), the list of storage keys; then, per key in that
# order, its element count (int64) and raw bytes.
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class _PlainUnpickler(pickle.Unpickler):
  """The legacy header pickles: ints, strings, dicts and lists only."""

  def find_class(self, module, name):
    raise TorchPickleError(f'refusing to unpickle {module}.{name} in a checkpoint header.')


class _LegacyUnpickler(_Unpickler):
  """The legacy object pickle: storages come from `storages`, read from the file's tail;
  with `storages=None`, a first pass that only collects each storage's type and size."""

  def __init__(self, file, path: str, storages: dict | None):
    super().__init__(file, None, '', path)
    self._data = storages
    self.found = {}

  def persistent_load(self, pid):
    kind, key, numel = self._storage_id(pid)
    if len(pid) > 5 and pid[5] is not None:
      raise TorchPickleError(f'{self._path}: storage views (legacy view_metadata) are not '
                             'supported; re-save the checkpoint with a recent PyTorch.')
    self.found[key] = (kind, numel)
    if self._data is None:
      return np.zeros((numel,), STORAGE_DTYPES[kind])  # shapes only, for the first pass
    return self._data[key]


def _load_legacy(path: str):
  with open(path, 'rb') as f:
    try:
      magic = _PlainUnpickler(f).load()
    except Exception as e:  # a text file, an image, a truncated download: all say the same
      raise TorchPickleError(f'{path} is not a PyTorch checkpoint ({e}).') from e
    if magic != _LEGACY_MAGIC:
      raise TorchPickleError(f'{path} is not a PyTorch checkpoint (neither a zip archive '
                             'nor the legacy format).')
    if _PlainUnpickler(f).load() != _LEGACY_PROTOCOL:
      raise TorchPickleError(f'{path}: unknown legacy checkpoint protocol.')
    info = _PlainUnpickler(f).load()
    if not (isinstance(info, dict) and info.get('little_endian', False)):
      raise TorchPickleError(f'{path}: big-endian checkpoints are not supported.')
    start = f.tell()
    first = _LegacyUnpickler(f, path, None)
    first.load()
    keys = _PlainUnpickler(f).load()
    storages = {}
    for key in keys:
      if key not in first.found:
        raise TorchPickleError(f'{path}: storage {key!r} is listed but never used.')
      kind, numel = first.found[key]
      dtype = np.dtype(STORAGE_DTYPES[kind])
      head = f.read(8)
      count = struct.unpack('<q', head)[0] if len(head) == 8 else -1
      raw = f.read(max(count, 0) * dtype.itemsize)
      if count < numel or len(raw) < count * dtype.itemsize:
        raise TorchPickleError(f'{path}: storage {key} is truncated.')
      storages[key] = np.frombuffer(raw, dtype)
    f.seek(start)
    second = io.BytesIO(f.read())  # the object pickle again, now with its storages
  return _LegacyUnpickler(second, path, storages).load()
