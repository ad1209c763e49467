r"""Train-step images/s on 1, 2 and 4 devices: the data-parallel path, on fake CPU devices.

  python bench/scaling.py                       # ResNet-18 w16 at 32 px, batch 64, CPU
  python bench/scaling.py --devices=1,8 --platform=gpu --depth=50 --image_size=224 --batch=224

Each device count runs in its own process (XLA fixes the CPU device count at start-up),
with the same seed, batch and steps. On one CPU the fake devices share the same cores, so
images/s measure overhead, not speed-up; the point is correctness: the loss of the first
step must not depend on the device count beyond rounding (printed as the difference to the
first row); later steps drift apart as training amplifies rounding differences. On GPUs
`--devices` takes real device counts (CUDA_VISIBLE_DEVICES is set per run).
Prints a table and writes JSON to bench/results/scaling_<platform>.json.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

import results_io

_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4'], 'Device counts to run.')
_PLATFORM = flags.DEFINE_enum('platform', 'cpu', ['cpu', 'gpu'], 'Where to run.')
_DEPTH = flags.DEFINE_integer('depth', 18, 'ResNet depth.')
_WIDTH = flags.DEFINE_integer('width', 16, 'ResNet base width (64 is the standard).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 32, 'Training resolution.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per run.')
_RUNS = flags.DEFINE_integer('runs', 3, 'Timed runs; the median is reported.')
_WORKER = flags.DEFINE_integer('worker', 0, 'Internal: run with this many devices.')
_OUT = flags.DEFINE_string('out', '', 'JSON path.')


def worker(devices: int) -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import common
  from ie_jax import pretrain
  from ie_jax.utils import sharding
  config = common.get_base_config()
  config.model.depth, config.model.width = _DEPTH.value, _WIDTH.value
  config.model.small_stem = _IMAGE_SIZE.value < 64
  config.moco.image_size, config.train.batch_size = _IMAGE_SIZE.value, _BATCH.value
  mesh = sharding.make_mesh(jax.devices()[:devices])
  _, state, step_fn = pretrain.build(config, mesh, total_steps=1000)
  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _IMAGE_SIZE.value, _IMAGE_SIZE.value, 3)
  batch = sharding.put_batch({'view1': rng.integers(0, 256, shape, np.uint8),
                              'view2': rng.integers(0, 256, shape, np.uint8)}, mesh)
  key = jax.random.key(0)
  state, metrics = step_fn(state, batch, key)  # compile
  jax.block_until_ready(metrics)
  times, losses = [], [float(metrics['loss'])]
  for _ in range(_RUNS.value):
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = step_fn(state, batch, key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
    losses.append(float(metrics['loss']))
  seconds = statistics.median(times)
  return {'devices': devices, 'platform': jax.devices()[0].platform,
          'images_per_s': _BATCH.value * _STEPS.value / seconds,
          'step_s': seconds / _STEPS.value, 'losses': losses}


def measure(devices: int) -> dict:
  env = dict(os.environ)
  if _PLATFORM.value == 'cpu':
    env.update(JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  else:
    env['CUDA_VISIBLE_DEVICES'] = ','.join(str(i) for i in range(devices))
  args = [a for a in sys.argv[1:] if not a.startswith('--worker')]
  done = subprocess.run([sys.executable, __file__, f'--worker={devices}', *args], env=env,
                        capture_output=True, text=True, check=False)
  if done.returncode != 0:
    return {'devices': devices, 'error': (done.stderr.strip().splitlines() or ['?'])[-1]}
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if _WORKER.value:
    print(json.dumps(worker(_WORKER.value)))
    return
  rows = [measure(int(d)) for d in _DEVICES.value]
  base = next((r for r in rows if 'error' not in r), None)
  # Step 1's loss must agree to float precision; later steps drift apart as rounding
  # differences (reduction order over devices) are amplified by training.
  print(f'{"devices":>7} {"images/s":>9} {"step s":>8} {"step-1 loss":>12} {"diff":>9} '
        f'{"last loss":>10} {"diff":>9}')
  for r in rows:
    if 'error' in r:
      print(f'{r["devices"]:>7}  error: {r["error"]}')
      continue
    r['first_loss_diff'] = abs(r['losses'][0] - base['losses'][0])
    r['last_loss_diff'] = abs(r['losses'][-1] - base['losses'][-1])
    print(f'{r["devices"]:>7} {r["images_per_s"]:>9.1f} {r["step_s"]:>8.3f} '
          f'{r["losses"][0]:>12.7f} {r["first_loss_diff"]:>9.1e} {r["losses"][-1]:>10.6f} '
          f'{r["last_loss_diff"]:>9.1e}')
  settings = {k: f.value for k, f in (
      ('depth', _DEPTH), ('width', _WIDTH), ('image_size', _IMAGE_SIZE), ('batch', _BATCH),
      ('steps', _STEPS), ('runs', _RUNS))}
  results_io.write('scaling', f'scaling_{_PLATFORM.value}', settings, rows, _OUT.value)


if __name__ == '__main__':
  app.run(main)
