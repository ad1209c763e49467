"""A tiny generated world for tests and CPU smoke runs: shapes on the web, shapes as target.

The corpus ("web") holds captioned images of the six target shapes in many colours, plus
distractors the target never shows (noise, gradients, checkerboards, blank frames). The
vocabulary names every caption's subject with a WordNet-style text. A working explorer
should learn to query shapes rather than distractors.
"""
import json
import os

import numpy as np
from PIL import Image

from ie_jax.data import shapes
from ie_jax.worlds import world_format

COLOURS = {'red': (220, 40, 40), 'green': (40, 180, 60), 'blue': (40, 70, 220),
           'yellow': (230, 210, 40), 'purple': (140, 50, 170)}
# concept -> its text "{lemma} ({hypernym}): {definition}."
SHAPE_TEXTS = {
    'disc': 'disc (round shape): a flat circular plate.',
    'square': 'square (polygon): a plane rectangle with four equal sides.',
    'triangle': 'triangle (polygon): a three-sided polygon.',
    'ring': 'ring (round shape): a toroidal shape with a hole in the middle.',
    'cross': 'cross (shape): a representation of the structure on which Jesus was crucified.',
    'stripes': 'stripes (pattern): a narrow band of contrasting colour.',
}
DISTRACTOR_TEXTS = {
    'static': 'static (noise): random electrical disturbance seen as speckles on a screen.',
    'gradient': 'gradient (change): a gradual change in colour across a surface.',
    'checkerboard': 'checkerboard (board): a board with alternating light and dark squares.',
    'blank': 'blank (space): an empty area with nothing on it.',
    'grain': 'grain (texture): the visible texture of a surface such as film or wood.',
    'haze': 'haze (atmosphere): a vague blur of colour like mist.',
}
VERSION = 1
BUILDER = __name__


def _distractor(kind: str, rng, size: int) -> np.ndarray:
  if kind in ('static', 'grain'):
    scale = 255 if kind == 'static' else 60
    return np.clip(128 + rng.normal(0, scale / 2, (size, size, 3)), 0, 255).astype(np.uint8)
  if kind == 'gradient':
    t = np.linspace(0, 1, size)[None, :, None]
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return np.broadcast_to(a * (1 - t) + b * t, (size, size, 3)).astype(np.uint8)
  if kind == 'checkerboard':
    cell = int(rng.integers(4, 12))
    yy, xx = np.mgrid[0:size, 0:size] // cell
    board = ((yy + xx) % 2)[..., None] * rng.uniform(100, 255, 3)
    return board.astype(np.uint8)
  if kind == 'blank':
    return np.full((size, size, 3), rng.uniform(0, 255, 3), np.uint8)
  blur = rng.uniform(80, 200, 3) + rng.normal(0, 5, (size, size, 3))
  return np.clip(blur, 0, 255).astype(np.uint8)


def build(directory: str, per_caption: int = 12, size: int = 72) -> dict:
  """Writes `corpus/` (images + captions.jsonl) and `vocab.tsv` under `directory`."""
  corpus = os.path.join(directory, 'corpus')
  vocab_path = os.path.join(directory, 'vocab.tsv')
  stamp = os.path.join(directory, 'world.json')
  paths = {'corpus': corpus, 'vocab': vocab_path}
  manifest = world_format.read_manifest(directory) if os.path.isdir(directory) else None
  if manifest and manifest.get('builder') == BUILDER and manifest.get('version') == VERSION:
    return paths
  world_format.check_buildable(directory, BUILDER)
  os.makedirs(os.path.join(corpus, 'images'), exist_ok=True)
  rng = np.random.default_rng(1234)
  rows = []
  for c, name in enumerate(shapes.CLASSES):
    for colour, rgb in COLOURS.items():
      for i in range(per_caption // 2):
        image, _ = shapes.generate(1, size, seed=10_000 + 100 * c + 10 * i + len(rows))
        tint = (0.6 * image[0] + 0.4 * np.asarray(rgb)).astype(np.uint8)
        rows.append((tint, f'a {colour} {name} shape'))
  for name in DISTRACTOR_TEXTS:
    for i in range(per_caption * len(COLOURS) // 2):
      rows.append((_distractor(name, rng, size), f'{name} texture sample {i}'))
  with open(os.path.join(corpus, 'captions.jsonl'), 'w', encoding='utf-8') as f:
    for i, (image, caption) in enumerate(rows):
      rel = f'images/{i:05d}.png'
      Image.fromarray(image).save(os.path.join(corpus, rel))
      f.write(json.dumps({'file': rel, 'caption': caption}) + '\n')
  with open(vocab_path, 'w', encoding='utf-8') as f:
    for name, text in {**SHAPE_TEXTS, **DISTRACTOR_TEXTS}.items():
      f.write(f'{name}\t{text}\n')
  with open(stamp, 'w', encoding='utf-8') as f:
    json.dump({'format': world_format.FORMAT, 'builder': BUILDER, 'name': 'shapes',
               'version': VERSION, 'images': len(rows)}, f)
  return paths
