"""The geometric half of the MoCo v3 views, on the host: RandomResizedCrop and flip.

Crops change the image size, so they run on the host, where each image is resized once
to the training size; the result ships to the device as uint8.
"""
import math

import numpy as np
from PIL import Image


def crop_box(rng: np.random.Generator, height: int, width: int, scale, ratio=(3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop box rule: 10 tries, then a centre crop.

  Returns (top, left, h, w).
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    h, w = height, int(round(height * ratio[1]))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop_flip(image: np.ndarray, rng: np.random.Generator, size: int,
                             crop_min: float) -> np.ndarray:
  """One geometric view: crop of area (crop_min, 1), bilinear resize to `size`, flip p=0.5."""
  top, left, h, w = crop_box(rng, image.shape[0], image.shape[1], (crop_min, 1.0))
  view = Image.fromarray(image[top:top + h, left:left + w]).resize(
      (size, size), Image.BILINEAR)
  view = np.asarray(view)
  if rng.uniform() < 0.5:
    view = view[:, ::-1]
  return view


def eval_transform(image: np.ndarray, size: int) -> np.ndarray:
  """Resize the short side to size * 256/224, then centre-crop `size` (the k-NN/probe view)."""
  h, w = image.shape[:2]
  short = int(round(size * 256 / 224))
  scale = short / min(h, w)
  new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top:top + size, left:left + size]
