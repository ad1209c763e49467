r"""The test-leak guard on a labelled set: how many true leaks it catches, how many unrelated
web images it refuses.

  python bench/leak_guard.py --world WORLD [--min_side 32 --max_side 64]

True leaks: every target test image of the world, re-encoded, resized, cropped and colour
shifted (the copies of a test image a web search returns). False alarms: the world's whole
web, which by construction holds no target test image (other renderings of other emoji,
silhouettes, flat icons). Each image goes through the downloader's own processing
(`validate.process`) and the guard (`DedupIndex.check`) exactly as in a run. Prints, for the
perceptual hash alone (the guard before issue #19) and for the guard as it is, the share
of each kind of leak caught and the number of web images refused.
"""
import argparse
import collections
import glob
import io
import os
import sys

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from ie_jax.web import dedup, phash, validate  # noqa: E402
from ie_jax.worlds import world_format  # noqa: E402

import results_io  # noqa: E402  bench/, the script's own directory


def encode(image: Image.Image, fmt: str = 'PNG', **kwargs) -> bytes:
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


def hue_shift(image: Image.Image, degrees: float) -> Image.Image:
  hsv = np.asarray(image.convert('HSV')).copy()
  hsv[..., 0] = (hsv[..., 0].astype(int) + round(degrees * 256 / 360)) % 256
  return Image.fromarray(hsv, 'HSV').convert('RGB')


def on_white(image: Image.Image) -> Image.Image:
  if image.mode in ('RGBA', 'LA', 'P'):
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  return image.convert('RGB')


LEAKS = {  # name -> how a web copy of a test image differs from it
    'jpeg q40': lambda im: encode(im, 'JPEG', quality=40),
    'jpeg q85': lambda im: encode(im, 'JPEG', quality=85),
    'upscaled 3x': lambda im: encode(im.resize((im.width * 3, im.height * 3),
                                               Image.Resampling.BICUBIC)),
    'downscaled 0.6x': lambda im: encode(im.resize((round(im.width * 0.6),
                                                    round(im.height * 0.6)))),
    'crop 90%': lambda im: encode(phash.centre_crop(im, 0.9)),
    'crop 80%': lambda im: encode(phash.centre_crop(im, 0.8)),
    'brighter 25%': lambda im: encode(ImageEnhance.Brightness(im).enhance(1.25)),
    'desaturated': lambda im: encode(ImageEnhance.Color(im).enhance(0.4)),
    'hue +30deg': lambda im: encode(hue_shift(im, 30)),
    'contrast 0.7 + jpeg': lambda im: encode(ImageEnhance.Contrast(im).enhance(0.7), 'JPEG',
                                             quality=70),
}


def guard_verdicts(index: dedup.DedupIndex, blobs, limits) -> np.ndarray:
  out = []
  for blob in blobs:
    try:
      p = validate.process(blob, limits)
    except validate.Rejected:
      out.append(False)
      continue
    verdict = index.check(p.sha256, p.phash, p.thumb)
    out.append(verdict is not None and verdict[0] == 'test_leak')
  return np.asarray(out)


def guards(tests, limits) -> dict:
  """The guard before issue #19 (the test image's pHash alone, within 10 bits) and now."""
  before, now = dedup.DedupIndex(leak_max_distance=10), dedup.DedupIndex()
  for image in tests:
    p = validate.process(encode(image), limits)
    before.forbid(p.sha256, p.phash)  # no picture: the hash alone decides
    now.forbid_image(encode(image), limits)
  return {'phash <= 10 bits (before)': before, 'guard as it is': now}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--world', required=True)
  parser.add_argument('--min_side', type=int, default=32)
  parser.add_argument('--max_side', type=int, default=64)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  world = world_format.open_world(args.world, need_ground_truth=True)
  truth = world_format.load_ground_truth(world)
  limits = validate.ImageLimits(min_side=args.min_side, short_side=args.max_side)
  tests = [on_white(Image.open(p)) for p in sorted(glob.glob(
      os.path.join(world.target, 'test', '*', '*')))]
  files = sorted(truth['images'])
  kinds = np.asarray([truth['images'][f].get('kind', 'web') for f in files])
  web = [open(os.path.join(world.corpus, f), 'rb').read() for f in files]  # pylint: disable=consider-using-with
  results = []
  for guard, index in guards(tests, limits).items():
    row = {'guard': guard, 'caught': {}}
    for name, make in LEAKS.items():
      caught = guard_verdicts(index, [make(im) for im in tests], limits)
      row['caught'][name] = float(caught.mean())
    refused = guard_verdicts(index, web, limits)
    row['web_refused'] = int(refused.sum())
    row['web_refused_by_kind'] = dict(collections.Counter(kinds[refused].tolist()))
    row['web_images'] = len(web)
    row['false_negative_rate'] = 1 - float(np.mean(list(row['caught'].values())))
    row['false_positive_rate'] = row['web_refused'] / len(web)
    results.append(row)
  print(f'{len(tests)} test images x {len(LEAKS)} kinds of copy; {len(web)} web images')
  print(f'{"leak kind":<22}' + ''.join(f'{r["guard"]:>28}' for r in results))
  for name in LEAKS:
    print(f'{name:<22}' + ''.join(f'{100 * r["caught"][name]:>27.1f}%' for r in results))
  print(f'{"web images refused":<22}' + ''.join(
      f'{r["web_refused"]:>21} ({100 * r["false_positive_rate"]:.2f}%)' for r in results))
  for r in results:
    print(f'  {r["guard"]}: refused by kind {r["web_refused_by_kind"]}')
  results_io.write('leak_guard', 'leak_guard', {'world': world.name, 'test_images': len(tests),
                                                'limits': [args.min_side, args.max_side]},
                   results, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
