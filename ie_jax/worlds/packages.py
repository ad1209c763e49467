"""Openly licensed image collections from the npm registry, fetched with npm itself.

A `Package` names a registry package by name, version and the sha512 integrity string the
registry published for it. `fetch` runs the ordinary client (`npm pack NAME@VERSION`, never a
hard-coded URL), checks the tarball against the pinned integrity, and unpacks it into the
cache, atomically: a directory in the cache is either complete or absent. A second call
returns the cached copy without touching the network, so an interrupted world build
resumes with the packages it already has.
"""
import base64
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile

log = logging.getLogger(__name__)


class PackageError(RuntimeError):
  """A package could not be obtained or is not what was pinned; the message says why."""


@dataclasses.dataclass(frozen=True)
class Package:
  name: str          # e.g. '@iconify-json/twemoji'
  version: str
  integrity: str     # 'sha512-<base64>', as `npm view NAME@VERSION dist.integrity` prints
  license: str       # SPDX id of the images, for NOTICE
  attribution: str   # who made the images

  @property
  def spec(self) -> str:
    return f'{self.name}@{self.version}'

  @property
  def slug(self) -> str:
    return self.name.lstrip('@').replace('/', '-') + '-' + self.version


def sri_sha512(path: str) -> str:
  digest = hashlib.sha512()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return 'sha512-' + base64.b64encode(digest.digest()).decode()


def _npm() -> str:
  npm = shutil.which('npm')
  if npm is None:
    raise PackageError(
        'The demo world is built from npm packages, and `npm` is not on PATH. Install '
        'Node.js with npm (Debian: `apt-get install npm`), or pass --cache pointing at a '
        'directory where the packages were already fetched.')
  return npm


def _pack(package: Package, dest: str) -> str:
  """`npm pack` into `dest`; returns the tarball's path."""
  cmd = [_npm(), 'pack', package.spec, '--json', '--pack-destination', dest]
  try:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
  except subprocess.TimeoutExpired as e:
    raise PackageError(f'`{" ".join(cmd)}` took more than 10 minutes.') from e
  if done.returncode != 0:
    raise PackageError(f'`npm pack {package.spec}` failed (exit {done.returncode}): '
                       f'{done.stderr.strip()[-800:]}')
  try:
    filename = json.loads(done.stdout)[0]['filename']
  except (ValueError, LookupError, TypeError) as e:
    raise PackageError(f'`npm pack {package.spec}` printed no tarball name: '
                       f'{done.stdout[:300]!r}') from e
  path = os.path.join(dest, os.path.basename(filename))
  if not os.path.isfile(path):
    raise PackageError(f'`npm pack {package.spec}` reported {filename}, which is not in {dest}.')
  return path


def _extract(tarball: str, dest: str) -> None:
  with tarfile.open(tarball, 'r:gz') as tar:
    for member in tar.getmembers():
      # npm tarballs hold regular files under package/; anything else is not ours to write.
      if not (member.isfile() or member.isdir()) or member.name.startswith('/') or \
          '..' in member.name.split('/'):
        raise PackageError(f'{tarball}: unexpected member {member.name!r} (type '
                           f'{member.type!r}); refusing to unpack it.')
    tar.extractall(dest, filter='data')


def fetch(package: Package, cache_dir: str) -> str:
  """The unpacked package root (its `package/` folder), fetched once into `cache_dir`.

  Raises:
    PackageError: npm is missing or failed, the tarball's checksum differs from the pin
      (the registry served something else), or the archive holds unsafe members.
  """
  final = os.path.join(cache_dir, package.slug)
  if os.path.isdir(os.path.join(final, 'package')):
    return os.path.join(final, 'package')
  os.makedirs(cache_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache_dir, prefix='.fetch-') as tmp:
    log.info('Fetching %s with npm.', package.spec)
    tarball = _pack(package, tmp)
    found = sri_sha512(tarball)
    if found != package.integrity:
      raise PackageError(
          f'{package.spec}: checksum mismatch, expected {package.integrity}, got {found}. '
          'The registry served a different file than the one this world was built from; '
          'nothing was unpacked.')
    unpacked = os.path.join(tmp, 'unpacked')
    _extract(tarball, unpacked)
    if not os.path.isdir(os.path.join(unpacked, 'package')):
      raise PackageError(f'{package.spec}: the tarball has no package/ folder.')
    os.replace(unpacked, final)
  return os.path.join(final, 'package')


def read_json(root: str, relpath: str, package: Package):
  """A JSON file of an unpacked package, with a clear error if the layout changed."""
  path = os.path.join(root, relpath)
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError as e:
    raise PackageError(f'{package.spec} has no {relpath}: its layout changed; this world '
                       'builder expects the pinned version.') from e
  except ValueError as e:
    raise PackageError(f'{package.spec}: {relpath} is not valid JSON: {e}') from e
