r"""Images/s of our downloader against img2dataset, same loopback server, same URLs.

  python bench/download.py --count=2000 --img2dataset_python=/tmp/i2d-venv/bin/python

A server process serves `count` distinct JPEGs (smooth random pictures, 300-1200 px a side,
so that neither side's dedup drops any) on 127.0.0.1, either at once or after an injected
100-300 ms per-request latency. Each downloader runs as its own process on the same URL list,
resizes the short side to `image_size` (ours: BICUBIC; img2dataset: keep_ratio, INTER_AREA)
and re-encodes JPEG at the same quality, and discards the output (our sink counts; theirs is
output_format=dummy). Wall time includes each process's start-up. img2dataset is run from
its own environment (`--img2dataset_python`), since it pulls in wandb, pandas and OpenCV.
Prints a table and writes bench/results/download.json.
"""
import asyncio
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_COUNT = flags.DEFINE_integer('count', 2000, 'Distinct image URLs per run.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Short side after resizing.')
_QUALITY = flags.DEFINE_integer('quality', 90, 'JPEG quality of the re-encoded images.')
_LATENCY = flags.DEFINE_list('latencies', ['0', '100:300'],
                             'Injected per-request latency in ms: 0, or LOW:HIGH uniform.')
_IMPLS = flags.DEFINE_list('impls', ['ours', 'img2dataset'], 'Downloaders to time.')
_CONCURRENCY = flags.DEFINE_integer('concurrency', 128, 'Our requests in flight.')
_PROCESSES = flags.DEFINE_integer('processes', os.cpu_count() or 1, 'img2dataset processes.')
_THREADS = flags.DEFINE_integer('threads', 64, 'img2dataset threads per process.')
_I2D_PYTHON = flags.DEFINE_string('img2dataset_python', sys.executable,
                                  'A python with img2dataset installed.')
_OUT = flags.DEFINE_string('out', 'bench/results/download.json', 'Where to write the JSON.')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: run our downloader on this URL file.')


def picture_jpeg(seed: int, quality: int = 92) -> bytes:
  import io

  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(seed)
  size = (int(rng.integers(300, 1201)), int(rng.integers(300, 1201)))
  coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
  buffer = io.BytesIO()
  coarse.resize(size, Image.Resampling.BICUBIC).save(buffer, 'JPEG', quality=quality)
  return buffer.getvalue()


def serve(count: int, port_queue) -> None:
  """The image server: /img/<i>.jpg at once, /slow/<lo>/<hi>/<i>.jpg after a random delay."""
  from aiohttp import web
  images = [picture_jpeg(i) for i in range(count)]

  async def image(request):
    return web.Response(body=images[int(request.match_info['i'])], content_type='image/jpeg')

  async def slow(request):
    low, high = int(request.match_info['lo']), int(request.match_info['hi'])
    await asyncio.sleep(random.uniform(low, high) / 1000)
    return await image(request)

  async def main():
    application = web.Application()
    application.router.add_get('/img/{i}.jpg', image)
    application.router.add_get('/slow/{lo}/{hi}/{i}.jpg', slow)
    runner = web.AppRunner(application, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0, backlog=1024)
    await site.start()
    port_queue.put(site._server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()

  asyncio.run(main())


def run_ours_worker(url_file: str) -> None:
  from ie_jax.web import download, fetch, records, validate
  with open(url_file, encoding='utf-8') as f:
    jobs = [records.Job(line.strip()) for line in f if line.strip()]
  options = download.DownloadOptions(
      fetch=fetch.FetchOptions(
          concurrency=_CONCURRENCY.value, per_host=_CONCURRENCY.value,  # one host here
          allow_networks=('127.0.0.1/32',)),
      image=validate.ImageLimits(max_side=_IMAGE_SIZE.value, jpeg_quality=_QUALITY.value),
      progress=False)
  start = time.perf_counter()
  counts = download.download(jobs, lambda record: None, options)
  print(json.dumps({'ok': counts['ok'], 'statuses': dict(counts),
                    'inner_s': time.perf_counter() - start}))


def time_ours(url_file: str) -> dict:
  start = time.perf_counter()
  out = subprocess.run(
      [sys.executable, os.path.abspath(__file__), f'--worker={url_file}',
       f'--image_size={_IMAGE_SIZE.value}', f'--quality={_QUALITY.value}',
       f'--concurrency={_CONCURRENCY.value}'],
      check=True, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  result = json.loads(out.stdout.strip().splitlines()[-1])
  return {'ok': result['ok'], 'seconds': seconds, 'inner_s': result['inner_s'],
          'statuses': result['statuses']}


def time_img2dataset(url_file: str) -> dict:
  with tempfile.TemporaryDirectory() as out_dir:
    command = [
        _I2D_PYTHON.value, '-c', 'from img2dataset.main import main; main()',
        f'--url_list={url_file}', '--input_format=txt', '--output_format=dummy',
        f'--output_folder={out_dir}/out', f'--image_size={_IMAGE_SIZE.value}',
        '--resize_mode=keep_ratio', '--resize_only_if_bigger=True', '--encode_format=jpg',
        f'--encode_quality={_QUALITY.value}', f'--processes_count={_PROCESSES.value}',
        f'--thread_count={_THREADS.value}',
        f'--number_sample_per_shard={max(100, _COUNT.value // (4 * _PROCESSES.value))}',
        '--timeout=10', '--retries=0', '--extract_exif=False', '--enable_wandb=False']
    env = {**os.environ, 'NO_ALBUMENTATIONS_UPDATE': '1', 'WANDB_MODE': 'disabled'}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    shards = []
    for name in os.listdir(f'{out_dir}/out'):
      if name.endswith('_stats.json'):
        with open(f'{out_dir}/out/{name}', encoding='utf-8') as f:
          shards.append(json.load(f))
  # From the first shard's start to the last one's end: the time spent downloading, without
  # the interpreter start-up and imports (wandb, pandas, OpenCV) that the wall time includes.
  inner = max(s['end_time'] for s in shards) - min(s['start_time'] for s in shards)
  return {'ok': sum(s['successes'] for s in shards), 'seconds': seconds, 'inner_s': inner}


def main(argv):
  del argv
  if _WORKER.value:
    run_ours_worker(_WORKER.value)
    return
  timers = {'ours': time_ours, 'img2dataset': time_img2dataset}
  unknown = set(_IMPLS.value) - set(timers)
  if unknown:
    raise ValueError(f'Unknown impls {sorted(unknown)}; valid: {sorted(timers)}.')
  ports = multiprocessing.Queue()
  server = multiprocessing.Process(target=serve, args=(_COUNT.value, ports), daemon=True)
  server.start()
  port = ports.get(timeout=600)
  rows = []
  try:
    with tempfile.TemporaryDirectory() as tmp:
      for latency in _LATENCY.value:
        prefix = 'img' if latency == '0' else 'slow/' + latency.replace(':', '/')
        url_file = os.path.join(tmp, f'urls-{len(rows)}.txt')
        with open(url_file, 'w', encoding='utf-8') as f:
          f.writelines(f'http://127.0.0.1:{port}/{prefix}/{i}.jpg\n' for i in range(_COUNT.value))
        for impl in _IMPLS.value:
          result = timers[impl](url_file)
          rows.append({'impl': impl, 'latency_ms': latency, 'count': _COUNT.value,
                       'images_per_s': result['ok'] / result['seconds'],
                       'images_per_s_inner': result['ok'] / result['inner_s'], **result})
          print(f'{impl:12s} latency={latency:8s} ok={result["ok"]:6d} '
                f'wall {result["seconds"]:6.1f} s {rows[-1]["images_per_s"]:7.1f} img/s; '
                f'downloading {result["inner_s"]:6.1f} s '
                f'{rows[-1]["images_per_s_inner"]:7.1f} img/s',
                flush=True)
  finally:
    server.terminate()
  print(f'\n| latency (ms) | timing | {" | ".join(_IMPLS.value)} (img/s) | ours / img2dataset |')
  print('|---|---|' + '---|' * len(_IMPLS.value) + '---|')
  for latency in _LATENCY.value:
    for timing, key in (('wall', 'images_per_s'), ('downloading', 'images_per_s_inner')):
      speed = {r['impl']: r[key] for r in rows if r['latency_ms'] == latency}
      ratio = (f'{speed["ours"] / speed["img2dataset"]:.2f}x'
               if {'ours', 'img2dataset'} <= set(speed) else '-')
      print(f'| {latency} | {timing} | {" | ".join(f"{speed[i]:.1f}" for i in _IMPLS.value)} '
            f'| {ratio} |')
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump({'machine': platform.platform(), 'cpus': os.cpu_count(),
               'image_size': _IMAGE_SIZE.value, 'quality': _QUALITY.value,
               'concurrency': _CONCURRENCY.value, 'img2dataset_processes': _PROCESSES.value,
               'img2dataset_threads': _THREADS.value, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
