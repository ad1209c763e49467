r"""Where a downloaded photo's CPU goes, per resize: could another library buy issue #4's 1.5x?

  python bench/download.py --count=400 --latencies=0 ...   # once, to make the photos
  python bench/resize.py --photos /tmp/ie_jax_bench_download/photo --count 300

On one thread, per image: the JPEG decode, then shrinking the short side to 224 with each
candidate, against a full decode + Pillow LANCZOS as the quality reference (PSNR, as
`bench/download.py` scores both downloaders). Pillow's HAMMING is what `ie_jax/web/validate.py`
uses; OpenCV's INTER_AREA is what img2dataset uses (measured only if `cv2` imports:
`pip install opencv-python-headless`; it is not an ie_jax dependency).
"""
import argparse
import io
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_io  # pylint: disable=wrong-import-position


def _size(image: Image.Image, side: int) -> tuple[int, int]:
  short = min(image.size)
  return round(image.width * side / short), round(image.height * side / short)


def _psnr(a, b) -> float:
  diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(10 * np.log10(255.0 ** 2 / max((diff ** 2).mean(), 1e-12)))


def _candidates() -> dict:
  out = {
      'pillow HAMMING (ie_jax)': lambda im, s: im.resize(s, Image.Resampling.HAMMING),
      'pillow BICUBIC': lambda im, s: im.resize(s, Image.Resampling.BICUBIC),
      'pillow HAMMING, reducing_gap 2': lambda im, s: im.resize(
          s, Image.Resampling.HAMMING, reducing_gap=2.0),
      'pillow BOX': lambda im, s: im.resize(s, Image.Resampling.BOX),
  }
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('cv2 not installed: OpenCV rows skipped (pip install opencv-python-headless)')
    return out
  cv2.setNumThreads(1)
  out[f'opencv {cv2.__version__} INTER_AREA (img2dataset)'] = lambda im, s: Image.fromarray(
      cv2.resize(np.asarray(im), s, interpolation=cv2.INTER_AREA))
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python bench/resize.py')
  parser.add_argument('--photos', required=True, help='a directory of N.jpg (bench/download.py)')
  parser.add_argument('--count', type=int, default=300)
  parser.add_argument('--side', type=int, default=224)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  blobs = [open(os.path.join(args.photos, f'{i}.jpg'), 'rb').read() for i in range(args.count)]

  def decode(blob):
    image = Image.open(io.BytesIO(blob))
    image.load()
    return image.convert('RGB')

  images = [decode(b) for b in blobs]
  sizes = [_size(im, args.side) for im in images]
  reference = [im.resize(s, Image.Resampling.LANCZOS) for im, s in zip(images, sizes)]

  def cpu_ms(fn) -> float:
    runs = []
    for _ in range(args.runs):
      start = time.process_time()
      fn()
      runs.append((time.process_time() - start) / len(images) * 1e3)
    return statistics.median(runs)

  rows = [{'step': 'JPEG decode (Pillow)', 'cpu_ms': cpu_ms(lambda: [decode(b) for b in blobs])}]
  for name, resize in _candidates().items():
    out = [resize(im, s) for im, s in zip(images, sizes)]
    rows.append({'step': name,
                 'cpu_ms': cpu_ms(lambda r=resize: [r(im, s) for im, s in zip(images, sizes)]),
                 'psnr_db': statistics.mean(_psnr(a, b) for a, b in zip(out, reference))})
  print(f'{"step":<42} {"CPU ms/img":>10} {"PSNR dB":>8}')
  for row in rows:
    psnr = f'{row["psnr_db"]:.2f}' if 'psnr_db' in row else '-'
    print(f'{row["step"]:<42} {row["cpu_ms"]:>10.2f} {psnr:>8}')
  results_io.write('resize', 'resize', {'count': args.count, 'side': args.side,
                                        'runs': args.runs}, rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
