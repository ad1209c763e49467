"""Decoding in worker processes, and the draft decode: sizes, quality, failures, shutdown."""
import asyncio
import concurrent.futures
import io
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from ie_jax.testing.fault_server import EXPECTED_FAULTS, FETCH, GOOD, LIMITS, FaultServer, serve
from ie_jax.web import decode_pool, download, records, validate
from ie_jax.web.records import Rejected


def photo_jpeg(size: tuple[int, int], quality: int = 90) -> bytes:
  """A real photo (tiled at its own resolution, so it keeps its detail) as a JPEG."""
  photo = load_sample_image('china.jpg')
  tiles = np.tile(photo, (size[1] // photo.shape[0] + 1, size[0] // photo.shape[1] + 1, 1))
  buffer = io.BytesIO()
  Image.fromarray(tiles[:size[1], :size[0]]).save(buffer, 'JPEG', quality=quality)
  return buffer.getvalue()


def psnr(a: Image.Image, b: Image.Image) -> float:
  error = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(10 * np.log10(255.0**2 / np.mean(error**2)))


@pytest.mark.parametrize('size', [(700, 500), (1343, 1400), (1344, 1500), (2689, 2700),
                                  (3000, 5379)])
def test_draft_decode_never_goes_below_the_margin_nor_the_stored_size(size):
  limits = validate.ImageLimits(short_side=224)
  data = photo_jpeg(size)
  with Image.open(io.BytesIO(data)) as image:
    decoded = validate._decode_rgb(image, limits.short_side)
  margin = validate._DRAFT_MARGIN * limits.short_side
  assert min(decoded.size) >= min(min(size), margin)
  assert (decoded.size == size) == (min(size) < 2 * margin)  # drafted when it can be
  processed = validate.process(data, limits)
  assert min(processed.width, processed.height) == limits.short_side


@pytest.mark.parametrize('size', [(2000, 1400), (4000, 2800)])  # drafted to 1/2 and 1/4
def test_drafted_output_is_as_close_to_lanczos_as_a_full_decode(size):
  limits = validate.ImageLimits(short_side=224)
  data = photo_jpeg(size)
  output = Image.open(io.BytesIO(validate.process(data, limits).jpeg)).convert('RGB')
  full = Image.open(io.BytesIO(data)).convert('RGB')
  reference = full.resize(output.size, Image.Resampling.LANCZOS)
  undrafted = io.BytesIO()
  validate._shrink(full, limits.short_side).save(undrafted, 'JPEG', quality=limits.jpeg_quality)
  # Measured: the same to 0.1 dB (~30 dB: a JPEG re-encode of this dense photo at quality
  # 90 is itself only ~31 dB from the reference).
  assert psnr(output, reference) > psnr(Image.open(undrafted), reference) - 0.5
  assert psnr(output, reference) > 28


def test_exif_orientation_is_applied_to_drafted_images():
  image = Image.open(io.BytesIO(photo_jpeg((2000, 1400))))
  exif = image.getexif()
  exif[0x0112] = 6  # rotated: the upright image is 1400 wide
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', exif=exif.tobytes())
  processed = validate.process(buffer.getvalue(), LIMITS)
  assert (processed.width, processed.height) == (LIMITS.short_side, round(2000 * LIMITS.short_side
                                                                       / 1400))


def test_a_header_over_the_pixel_limit_is_refused_before_decoding():
  data = photo_jpeg((1000, 800))
  limits = validate.ImageLimits(short_side=LIMITS.short_side, max_pixels=1000 * 800 - 1)
  with pytest.raises(Rejected) as failure:
    validate.process(data, limits)
  assert failure.value.reason == 'decompression_bomb'


def test_the_pool_returns_images_and_reasons():
  async def go():
    with concurrent.futures.ThreadPoolExecutor(1) as threads:
      pool = decode_pool.DecodePool(2, threads)
      try:
        good = await pool.process(GOOD['a.jpg'][0], LIMITS)
        with pytest.raises(Rejected) as bad:
          await pool.process(b'<html>not an image</html>', LIMITS)
        with pytest.raises(Rejected) as small:
          await pool.process(photo_jpeg((90, 50)), LIMITS)
        return good, bad.value, small.value
      finally:
        pool.close()

  good, bad, small = asyncio.run(go())
  assert good == validate.process(GOOD['a.jpg'][0], LIMITS)  # the same bytes and hashes
  assert (bad.reason, small.reason) == ('unsupported_format', 'too_small')
  assert small.detail.startswith('90x50')
  assert not multiprocessing.active_children()


class _KillsTheWorker:
  """Unpickled in a worker, it ends that worker at once, as a segfaulting decoder would."""

  def __reduce__(self):
    return os._exit, (13,)


def test_a_dying_worker_costs_one_image_and_the_pool_is_replaced():
  async def go():
    with concurrent.futures.ThreadPoolExecutor(1) as threads:
      pool = decode_pool.DecodePool(2, threads)
      try:
        with pytest.raises(Rejected) as died:
          await pool.process(GOOD['a.jpg'][0], _KillsTheWorker())
        after = await pool.process(GOOD['a.jpg'][0], LIMITS)  # a fresh pool
        return died.value, after
      finally:
        pool.close()

  died, after = asyncio.run(go())
  assert died.reason == 'decode_error' and 'died' in died.detail
  assert after.width and after.height
  assert not multiprocessing.active_children()


def test_processes_and_threads_give_the_same_records():
  async def go(processes):
    server = FaultServer()  # fresh: some faults change with the number of hits
    options = download.DownloadOptions(fetch=FETCH, image=LIMITS, decode_processes=processes,
                                       progress=False)
    async with serve(server.app()) as base:
      jobs = [records.Job(f'{base}/img/{name}') for name in GOOD if name != 'redirected.jpg']
      # Not the faults that race a 0.3 s timeout: the workers' start-up may load the machine.
      jobs += [records.Job(f'{base}/fault/{name}') for name, reason in EXPECTED_FAULTS.items()
               if reason not in ('timeout', 'connection_error')]
      got = []
      await download.Downloader(options).run(jobs, got.append)
      return {r.url.removeprefix(base): (r.status, r.sha256, r.phash) for r in got}

  assert asyncio.run(go(2)) == asyncio.run(go(0))
  assert not multiprocessing.active_children()


def test_the_workers_are_stopped_when_the_sink_fails():
  class SinkError(Exception):
    pass

  def sink(record):
    raise SinkError(record.url)

  async def go():
    options = download.DownloadOptions(fetch=FETCH, image=LIMITS, decode_processes=2,
                                       progress=False)
    async with serve(FaultServer().app()) as base:
      jobs = [records.Job(f'{base}/img/{name}') for name in GOOD if name != 'redirected.jpg']
      await download.Downloader(options).run(jobs, sink)

  with pytest.raises(SinkError):
    asyncio.run(go())
  assert not multiprocessing.active_children()
