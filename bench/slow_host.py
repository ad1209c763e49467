r"""Slow URLs on one host: does the downloader keep fetching the host's fast URLs?

  python bench/slow_host.py [--urls 600] [--slow_fraction 0.05] [--stall_s 8] \
      [--img2dataset_python /path/to/venv/bin/python]

One host (127.0.0.1, a server in a thread of this process) answers every request after
100-300 ms, except a fraction that stall for --stall_s first (a slow CDN edge, a trickle);
every URL is a distinct small JPEG. The same list runs through the real downloader with
the default slots per host (8, growing to 32 while the host answers in time; slow requests
give their slot back: `web/host_slots.py`), with 8 fixed slots that slow requests give back,
against the reference of 8 plain slots (the behaviour before issue #22), and with 64 plain
slots. With --img2dataset_python (a python with img2dataset installed; it
is not a dependency), img2dataset downloads the same list from the same server in the same
run, at its default settings (1 process, 256 threads, 10 s timeout, no retries) but for the
output (files, 64 px short side, as ours). Its rate is counted over its own download time
(its shards' first start to last end), without its interpreter's start-up. Prints good
images/s and wall time; writes bench/results/slow_host.json.
"""
import argparse
import asyncio
import dataclasses
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
from aiohttp import web
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from ie_jax.testing.fault_server import serve_in_thread
from ie_jax.web import download, fetch, validate
import results_io  # bench/, the script's own directory


def jpeg(i: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.RandomState(i).randint(0, 256, (72, 96, 3), np.uint8)).save(
      buf, 'JPEG', quality=85)
  return buf.getvalue()


def site(count: int, stall_s: float):
  bodies = [jpeg(i) for i in range(count)]

  async def handle(request):
    kind, i = request.match_info['kind'], int(request.match_info['i'])
    await asyncio.sleep(stall_s if kind == 'stall' else random.uniform(0.1, 0.3))
    return web.Response(body=bodies[i], content_type='image/jpeg')
  app = web.Application()
  app.router.add_get('/{kind}/{i}', handle)
  return app


def run(urls: list[str], name: str, **changes) -> dict:
  options = download.DownloadOptions(
      fetch=dataclasses.replace(fetch.FetchOptions(allow_networks=('127.0.0.1/32',)),
                                **changes),
      image=validate.ImageLimits(min_side=32, short_side=64), decode_processes=0,
      progress=False)
  ok = []
  start = time.perf_counter()
  download.download([download.Job(u) for u in urls],
                    lambda r: ok.append(r) if r.status == 'ok' else None, options)
  wall = time.perf_counter() - start
  row = {'downloader': name, **{k: v for k, v in changes.items()}, 'ok': len(ok),
         'wall_s': round(wall, 2), 'good_images_per_s': round(len(ok) / wall, 2)}
  print(f'{name:<44} ok {len(ok):5d}  {wall:7.1f} s  {len(ok) / wall:7.1f} good images/s',
        flush=True)
  return row


def run_img2dataset(urls: list[str], python: str) -> dict:
  """img2dataset over `urls` at its defaults, output as 64 px files."""
  with tempfile.TemporaryDirectory() as tmp:
    url_file = os.path.join(tmp, 'urls.txt')
    with open(url_file, 'w', encoding='utf-8') as f:
      f.write('\n'.join(urls) + '\n')
    out = os.path.join(tmp, 'out')
    start = time.perf_counter()
    subprocess.run([python, '-c', 'from img2dataset.main import main; main()',
                    f'--url_list={url_file}', '--input_format=txt', '--output_format=files',
                    f'--output_folder={out}', '--image_size=64', '--resize_mode=keep_ratio',
                    '--enable_wandb=False'],
                   check=True, capture_output=True, text=True,
                   env={**os.environ, 'NO_ALBUMENTATIONS_UPDATE': '1', 'WANDB_MODE': 'disabled'})
    wall = time.perf_counter() - start
    shards = []
    for name in os.listdir(out):
      if name.endswith('_stats.json'):
        with open(os.path.join(out, name), encoding='utf-8') as f:
          shards.append(json.load(f))
  ok = sum(s['successes'] for s in shards)
  inner = max(s['end_time'] for s in shards) - min(s['start_time'] for s in shards)
  name = 'img2dataset 1 process x 256 threads (its defaults)'
  print(f'{name:<44} ok {ok:5d}  {inner:7.1f} s  {ok / inner:7.1f} good images/s '
        f'({wall:.1f} s with start-up)', flush=True)
  return {'downloader': name, 'ok': ok, 'wall_s': round(inner, 2),
          'wall_with_startup_s': round(wall, 2), 'good_images_per_s': round(ok / inner, 2)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--urls', type=int, default=600)
  parser.add_argument('--slow_fraction', type=float, default=0.05)
  parser.add_argument('--stall_s', type=float, default=8.0)
  parser.add_argument('--img2dataset_python', default='',
                      help='a python with img2dataset installed: also run it, side by side')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  rng = random.Random(0)
  slow = set(rng.sample(range(args.urls), int(args.urls * args.slow_fraction)))
  with serve_in_thread(site(args.urls, args.stall_s)) as base:
    urls = [f'{base}/{"stall" if i in slow else "fast"}/{i}' for i in range(args.urls)]
    rows = [
        run(urls, 'ie_jax default: 8 slots growing to 32, slow ones give back'),
        run(urls, '8 fixed slots, slow ones give back', max_per_host=8),
        run(urls, '8 plain slots (reference: before #22)', slow_factor=0.0, max_per_host=8),
        run(urls, '64 plain slots', per_host=64, slow_factor=0.0, max_per_host=64),
    ]
    if args.img2dataset_python:
      rows.append(run_img2dataset(urls, args.img2dataset_python))
  ratio = rows[0]['good_images_per_s'] / rows[2]['good_images_per_s']
  print(f'default vs 8 plain slots: {ratio:.2f}x good images/s')
  summary = {'config': vars(args), 'ratio_vs_plain_8': ratio}
  if args.img2dataset_python:
    summary['ratio_vs_img2dataset'] = rows[0]['good_images_per_s'] / rows[-1]['good_images_per_s']
    print(f'default vs img2dataset: {summary["ratio_vs_img2dataset"]:.2f}x good images/s')
  results_io.write('slow_host', 'slow_host', summary, rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
