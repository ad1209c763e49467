r"""Builds an offline world ahead of a run.

  python -m ie_jax.worlds build demo [--cache DIR] [--out DIR]

`--cache` holds the fetched packages (default: the ie_jax cache); `--out` is the world's
directory (default: WORLDS_DIR/<name> under the ie_jax cache). A run with
`config.world_dir=<out>` then uses it without building.
"""
import argparse
import logging
import os
import sys

from ie_jax import worlds
from ie_jax.concepts import cache
from ie_jax.worlds import demo_world, packages


def default_dir(name: str) -> str:
  return os.path.join(cache.default_cache_dir(), 'worlds', name)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ie_jax.worlds')
  sub = parser.add_subparsers(dest='command', required=True)
  build = sub.add_parser('build', help='build a world')
  build.add_argument('name', choices=sorted(worlds.WORLDS))
  build.add_argument('--cache', default=None, help='package cache directory')
  build.add_argument('--out', default=None, help='world directory')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  out = args.out or default_dir(args.name)
  kwargs = {'cache_dir': args.cache} if args.name != 'shapes' else {}
  try:
    paths = worlds.build(args.name, out, **kwargs)
  except (demo_world.WorldBuildError, packages.PackageError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  for key, path in sorted(paths.items()):
    print(f'{key}: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
