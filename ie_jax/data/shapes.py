"""A generated, labelled target set of coloured shapes: for tests and CPU smoke runs.

It needs no download, so the suite and the tiny config run offline anywhere. Images are a
deterministic function of (seed, index).
"""
import numpy as np

CLASSES = ('disc', 'square', 'triangle', 'ring', 'cross', 'stripes')


def _mask(kind: int, yy, xx, cy, cx, r):
  dy, dx = yy - cy, xx - cx
  if kind == 0:
    return dy**2 + dx**2 <= r**2
  if kind == 1:
    return (np.abs(dy) <= r) & (np.abs(dx) <= r)
  if kind == 2:
    return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
  if kind == 3:
    d = np.sqrt(dy**2 + dx**2)
    return (d <= r) & (d >= 0.6 * r)
  if kind == 4:
    return ((np.abs(dy) <= r / 3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r / 3) & (np.abs(dy) <= r))
  return (np.abs(dy) <= r) & (np.abs(dx) <= r) & ((xx // max(int(r / 3), 1)) % 2 == 0)


def generate(num: int, size: int, seed: int = 0):
  """Returns (images uint8 [num, size, size, 3], labels int32 [num])."""
  images = np.empty((num, size, size, 3), np.uint8)
  labels = np.empty((num,), np.int32)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  for i in range(num):
    rng = np.random.default_rng([seed, i])
    label = int(rng.integers(len(CLASSES)))
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-1, 1, 3) * 60 / size
    image = base + yy[..., None] * slope + rng.normal(0, 8, (size, size, 3))
    r = rng.uniform(0.2, 0.35) * size
    cy, cx = rng.uniform(r, size - r, 2)
    colour = rng.uniform(0, 255, 3)
    image[_mask(label, yy, xx, cy, cx, r)] = colour
    images[i] = np.clip(image, 0, 255).astype(np.uint8)
    labels[i] = label
  return images, labels
