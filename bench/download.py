r"""Images/s of our downloader against img2dataset, same loopback server, same URLs.

  python bench/download.py --count=10000 --img2dataset_python=/tmp/i2d-venv/bin/python

A server process serves `count` distinct JPEGs on 127.0.0.1, either at once or after an
injected 100-300 ms per-request latency. With --pictures=photo (the default) each is a mosaic
of native-resolution crops of real photographs (the sample photos scikit-learn and matplotlib
ship), 300-1200 px a side, saved at JPEG quality 75-95: real detail for the decoders and
resizers, and no two alike for either side's dedup. --pictures=smooth gives the older smooth
random pictures. Each downloader runs as its own process on the same URL list, resizes the
short side to `image_size` (img2dataset: keep_ratio, INTER_AREA) and re-encodes JPEG at the
same quality, and discards the output (our sink counts; theirs is output_format=dummy). Wall
time includes each process's start-up; CPU time is the process tree's user + system time.
img2dataset is run from its own environment (`--img2dataset_python`), since it pulls in
wandb, pandas and OpenCV.

Output quality: both tools then fetch the first `quality_sample` URLs once more, keeping their
output, and each output is compared (PSNR, RGB) with a reference of the same size made by a
full decode of the source and a LANCZOS resize.

Prints a table and writes bench/results/download.json.
"""
import asyncio
import json
import multiprocessing
import os
import platform
import random
import resource
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
_WORKERS = flags.DEFINE_integer('decode_processes', -1,
                                 'Our decode processes (-1: one per core, as measured; '
                                 '0: threads, the explorer default).')
_PICTURES = flags.DEFINE_enum('pictures', 'photo', ['photo', 'smooth'], 'What the server serves.')
_QUALITY_SAMPLE = flags.DEFINE_integer('quality_sample', 100,
                                       'Images whose output PSNR is measured (0: none).')
_CACHE = flags.DEFINE_string(
    'cache_dir', os.path.join(tempfile.gettempdir(), 'ie_jax_bench_download'),
    'Where the served pictures are kept between runs.')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: run our downloader on this URL file.')
_SAVE = flags.DEFINE_string('save', '', 'Internal: the worker writes its JPEGs under this dir.')


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


_PHOTOS = []


def _photos() -> list:
  """The real photographs the mosaics are cut from, as HxWx3 uint8 arrays (cached)."""
  if not _PHOTOS:
    import matplotlib.cbook
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image
    _PHOTOS.extend(load_sample_image(name) for name in ('china.jpg', 'flower.jpg'))
    with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
      _PHOTOS.append(np.asarray(Image.open(f).convert('RGB')))
  return _PHOTOS


def photo_jpeg(seed: int) -> bytes:
  """A 300-1200 px mosaic of native-resolution crops of real photos, JPEG quality 75-95.

  Cells of 100-300 px keep even the smallest mosaic to a few crops, so that no two of them
  are near duplicates by perceptual hash.
  """
  import io

  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(seed)
  width, height = int(rng.integers(300, 1201)), int(rng.integers(300, 1201))
  canvas = np.empty((height, width, 3), np.uint8)
  cell = int(rng.integers(100, 301))
  for top in range(0, height, cell):
    for left in range(0, width, cell):
      h, w = min(cell, height - top), min(cell, width - left)
      source = _photos()[int(rng.integers(len(_photos())))]
      y = int(rng.integers(0, source.shape[0] - h + 1))
      x = int(rng.integers(0, source.shape[1] - w + 1))
      crop = source[y:y + h, x:x + w]
      canvas[top:top + h, left:left + w] = crop[:, ::-1] if rng.random() < 0.5 else crop
  buffer = io.BytesIO()
  Image.fromarray(canvas).save(buffer, 'JPEG', quality=int(rng.integers(75, 96)))
  return buffer.getvalue()


def source_jpeg(seed: int, pictures: str) -> bytes:
  return photo_jpeg(seed) if pictures == 'photo' else picture_jpeg(seed)


def _write_source(seed: int, pictures: str, directory: str) -> None:
  path = os.path.join(directory, f'{seed}.jpg')
  if not os.path.exists(path):
    with open(path + '.tmp', 'wb') as f:
      f.write(source_jpeg(seed, pictures))
    os.replace(path + '.tmp', path)


def make_sources(count: int, pictures: str) -> str:
  """The directory holding 0.jpg .. <count-1>.jpg, made (in parallel) where missing."""
  import functools
  directory = os.path.join(_CACHE.value, pictures)
  os.makedirs(directory, exist_ok=True)
  with multiprocessing.Pool() as pool:  # 10,000 mosaics take minutes on one core
    pool.map(functools.partial(_write_source, pictures=pictures, directory=directory),
             range(count), chunksize=64)
  return directory


def serve(count: int, directory: str, port_queue) -> None:
  """The image server: /img/<i>.jpg at once, /slow/<lo>/<hi>/<i>.jpg after a random delay."""
  from aiohttp import web
  images = []
  for i in range(count):
    with open(os.path.join(directory, f'{i}.jpg'), 'rb') as f:
      images.append(f.read())

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
  workers = {'decode_processes': _WORKERS.value}
  options = download.DownloadOptions(
      fetch=fetch.FetchOptions(
          concurrency=_CONCURRENCY.value, per_host=_CONCURRENCY.value,  # one host here
          allow_networks=('127.0.0.1/32',)),
      image=validate.ImageLimits(short_side=_IMAGE_SIZE.value, jpeg_quality=_QUALITY.value),
      progress=False, **workers)
  index = {job.url: i for i, job in enumerate(jobs)}

  def save(record):
    if _SAVE.value and record.status == 'ok':
      with open(os.path.join(_SAVE.value, f'{index[record.url]}.jpg'), 'wb') as f:
        f.write(record.jpeg)

  start = time.perf_counter()
  counts = download.download(jobs, save, options)
  print(json.dumps({'ok': counts['ok'], 'statuses': dict(counts),
                    'inner_s': time.perf_counter() - start}))


def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def time_ours(url_file: str, save_dir: str = '') -> dict:
  cpu, start = _children_cpu_s(), time.perf_counter()
  out = subprocess.run(
      [sys.executable, os.path.abspath(__file__), f'--worker={url_file}', f'--save={save_dir}',
       f'--image_size={_IMAGE_SIZE.value}', f'--quality={_QUALITY.value}',
       f'--concurrency={_CONCURRENCY.value}', f'--decode_processes={_WORKERS.value}'],
      check=True, capture_output=True, text=True)
  seconds, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
  result = json.loads(out.stdout.strip().splitlines()[-1])
  return {'ok': result['ok'], 'seconds': seconds, 'inner_s': result['inner_s'], 'cpu_s': cpu,
          'statuses': result['statuses']}


def time_img2dataset(url_file: str, save_dir: str = '') -> dict:
  with tempfile.TemporaryDirectory() as out_dir:
    output = ['--output_format=files', f'--output_folder={save_dir}'] if save_dir else [
        '--output_format=dummy', f'--output_folder={out_dir}/out']
    command = [
        _I2D_PYTHON.value, '-c', 'from img2dataset.main import main; main()',
        f'--url_list={url_file}', '--input_format=txt', *output,
        f'--image_size={_IMAGE_SIZE.value}',
        '--resize_mode=keep_ratio', '--resize_only_if_bigger=True', '--encode_format=jpg',
        f'--encode_quality={_QUALITY.value}', f'--processes_count={_PROCESSES.value}',
        f'--thread_count={_THREADS.value}',
        f'--number_sample_per_shard={max(100, _COUNT.value // (4 * _PROCESSES.value))}',
        '--timeout=10', '--retries=0', '--extract_exif=False', '--enable_wandb=False']
    env = {**os.environ, 'NO_ALBUMENTATIONS_UPDATE': '1', 'WANDB_MODE': 'disabled'}
    cpu, start = _children_cpu_s(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    seconds, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    shards = []
    stats_dir = save_dir or f'{out_dir}/out'
    for name in os.listdir(stats_dir):
      if name.endswith('_stats.json'):
        with open(f'{stats_dir}/{name}', encoding='utf-8') as f:
          shards.append(json.load(f))
  # From the first shard's start to the last one's end: the time spent downloading, without
  # the interpreter start-up and imports (wandb, pandas, OpenCV) that the wall time includes.
  inner = max(s['end_time'] for s in shards) - min(s['start_time'] for s in shards)
  return {'ok': sum(s['successes'] for s in shards), 'seconds': seconds, 'inner_s': inner,
          'cpu_s': cpu}


def saved_img2dataset(save_dir: str, index: dict) -> dict:
  """URL index -> path of the JPEG img2dataset wrote for it (output_format=files)."""
  paths = {}
  for shard in os.listdir(save_dir):
    if not os.path.isdir(os.path.join(save_dir, shard)):
      continue
    for name in os.listdir(os.path.join(save_dir, shard)):
      if name.endswith('.json'):
        with open(os.path.join(save_dir, shard, name), encoding='utf-8') as f:
          meta = json.load(f)
        jpg = os.path.join(save_dir, shard, name.removesuffix('.json') + '.jpg')
        if meta.get('status') == 'success' and os.path.exists(jpg):
          paths[index[meta['url']]] = jpg
  return paths


def psnr(output, source: bytes) -> float:
  """PSNR of `output` (a PIL image) against a full decode of `source`, LANCZOS-resized to it."""
  import io

  import numpy as np
  from PIL import Image
  reference = Image.open(io.BytesIO(source)).convert('RGB')
  if reference.size != output.size:
    reference = reference.resize(output.size, Image.Resampling.LANCZOS)
  error = np.asarray(output.convert('RGB'), np.float64) - np.asarray(reference, np.float64)
  return float(10 * np.log10(255.0**2 / max(np.mean(error**2), 1e-10)))


def quality(port: int, sources: str, tmp: str) -> dict:
  """impl -> mean PSNR (and how many outputs) over the first `quality_sample` images."""
  import numpy as np
  from PIL import Image
  sample = range(min(_QUALITY_SAMPLE.value, _COUNT.value))
  urls = [f'http://127.0.0.1:{port}/img/{i}.jpg' for i in sample]
  url_file = os.path.join(tmp, 'quality-urls.txt')
  with open(url_file, 'w', encoding='utf-8') as f:
    f.writelines(u + '\n' for u in urls)
  outputs = {}
  if 'ours' in _IMPLS.value:
    os.makedirs(save := os.path.join(tmp, 'quality-ours'))
    time_ours(url_file, save)
    outputs['ours'] = {int(n.removesuffix('.jpg')): os.path.join(save, n)
                       for n in os.listdir(save)}
  if 'img2dataset' in _IMPLS.value:
    save = os.path.join(tmp, 'quality-img2dataset')
    time_img2dataset(url_file, save)
    outputs['img2dataset'] = saved_img2dataset(save, {u: i for i, u in enumerate(urls)})
  result = {}
  for impl, paths in outputs.items():
    scores = []
    for i, path in sorted(paths.items()):
      with Image.open(path) as output:
        with open(os.path.join(sources, f'{i}.jpg'), 'rb') as f:
          scores.append(psnr(output, f.read()))
    result[impl] = {'mean_psnr_db': float(np.mean(scores)), 'min_psnr_db': float(np.min(scores)),
                    'images': len(scores)}
  return result


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
  sources = make_sources(_COUNT.value, _PICTURES.value)
  server = multiprocessing.Process(target=serve, args=(_COUNT.value, sources, ports), daemon=True)
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
                       'images_per_s_inner': result['ok'] / result['inner_s'],
                       'cpu_ms_per_image': 1e3 * result['cpu_s'] / max(result['ok'], 1),
                       **result})
          print(f'{impl:12s} latency={latency:8s} ok={result["ok"]:6d} '
                f'wall {result["seconds"]:6.1f} s {rows[-1]["images_per_s"]:7.1f} img/s; '
                f'downloading {result["inner_s"]:6.1f} s '
                f'{rows[-1]["images_per_s_inner"]:7.1f} img/s; '
                f'CPU {rows[-1]["cpu_ms_per_image"]:5.2f} ms/img',
                flush=True)
      psnrs = quality(port, sources, tmp) if _QUALITY_SAMPLE.value else {}
  finally:
    server.terminate()
  print(f'\n| latency (ms) | timing | {" | ".join(_IMPLS.value)} (img/s) | ours / img2dataset |')
  print('|---|---|' + '---|' * len(_IMPLS.value) + '---|')
  for latency in _LATENCY.value:
    for timing, key in (('wall', 'images_per_s'), ('downloading', 'images_per_s_inner'),
                        ('CPU ms/img', 'cpu_ms_per_image')):
      speed = {r['impl']: r[key] for r in rows if r['latency_ms'] == latency}
      ratio = (f'{speed["ours"] / speed["img2dataset"]:.2f}x'
               if {'ours', 'img2dataset'} <= set(speed) else '-')
      print(f'| {latency} | {timing} | {" | ".join(f"{speed[i]:.1f}" for i in _IMPLS.value)} '
            f'| {ratio} |')
  for impl, score in psnrs.items():
    print(f'{impl:12s} PSNR against full decode + LANCZOS: mean {score["mean_psnr_db"]:.2f} dB, '
          f'min {score["min_psnr_db"]:.2f} dB over {score["images"]} images')
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump({'machine': platform.platform(), 'cpus': os.cpu_count(),
               'image_size': _IMAGE_SIZE.value, 'quality': _QUALITY.value,
               'concurrency': _CONCURRENCY.value, 'img2dataset_processes': _PROCESSES.value,
               'img2dataset_threads': _THREADS.value, 'pictures': _PICTURES.value,
               'decode_processes': _WORKERS.value, 'psnr': psnrs, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
