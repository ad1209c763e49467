r"""Images/s of our jitted MoCo v3 step against the PyTorch reference step, same machine.

  python bench/train_step.py                                    # GPU: ResNet-50, 224 px, batch 224
  python bench/train_step.py --image_size=64 --batch=32         # CPU-sized

Both sides train the same model (ResNet + MoCo v3 heads, LARS, EMA) on the same batch and
resolution from synthetic data already in memory, so this measures the step, not the input
pipeline. PyTorch runs as a user would run it fast: channels_last, bf16 autocast where
supported, and torch.compile where it works (falling back to eager, with the reason
recorded). Prints a table and writes JSON to bench/results/.
"""
import os
import statistics
import sys
import time

from absl import app, flags

import results_io

_DEPTH = flags.DEFINE_integer('depth', 50, 'ResNet depth (18 or 50).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Training resolution.')
_BATCH = flags.DEFINE_integer('batch', 224, 'Global batch size.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.')
_IMPLS = flags.DEFINE_list('impls', ['jax', 'torch'], 'Implementations to time.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps (compilation) before timing.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed runs; the median is reported.')
_STEPS = flags.DEFINE_integer('steps_per_run', 2, 'Steps per timed run.')
_COMPILE = flags.DEFINE_bool('torch_compile', True, 'Try torch.compile (falls back to eager).')
_OUT = flags.DEFINE_string('out', '', 'JSON path (default bench/results/train_step_<device>.json).')

LR, WD, MOMENTUM, TC, M = 0.7, 1e-6, 0.9, 1e-3, 0.9985


def time_runs(step, sync):
  for _ in range(_WARMUP.value):
    step()
  sync()
  times = []
  for _ in range(_RUNS.value):
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      step()
    sync()
    times.append((time.perf_counter() - start) / _STEPS.value)
  return times


def bench_jax(dtype: str):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ie_jax import optim, train
  from ie_jax.models import moco
  from ie_jax.utils import sharding

  model = moco.MoCoV3(depth=_DEPTH.value, dtype={'float32': jnp.float32,
                                                 'bfloat16': jnp.bfloat16}[dtype])
  tx = optim.lars(LR, WD, MOMENTUM, TC)
  mesh = sharding.make_mesh()
  state = jax.jit(lambda: train.create_train_state(jax.random.key(0), model, tx,
                                                   _IMAGE_SIZE.value),
                  out_shardings=sharding.replicated(mesh))()
  step_fn = train.make_train_step(mesh, model=model, tx=tx, learning_rate=lambda s: LR,
                                  ema_momentum=optim.constant_momentum(M), temperature=1.0)
  rng = np.random.RandomState(0)
  shape = (_BATCH.value, _IMAGE_SIZE.value, _IMAGE_SIZE.value, 3)
  batch = sharding.put_batch({'view1': rng.randint(0, 256, shape).astype(np.uint8),
                              'view2': rng.randint(0, 256, shape).astype(np.uint8)}, mesh)
  holder = {'state': state, 'metrics': None}

  def step():
    holder['state'], holder['metrics'] = step_fn(holder['state'], batch, jax.random.key(1))

  def sync():
    jax.block_until_ready(holder['metrics'])

  times = time_runs(step, sync)
  return times, {'device': str(jax.devices()[0].device_kind), 'num_devices': len(jax.devices()),
                 'jax': jax.__version__}


def bench_torch(dtype: str):
  import torch

  from ie_jax.testing import torch_moco

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cuda':
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    torch.backends.cudnn.allow_tf32 = False
  model = torch_moco.MoCoV3(depth=_DEPTH.value).to(device).to(memory_format=torch.channels_last)
  opt = torch_moco.LARS([p for p in model.parameters() if p.requires_grad], lr=LR,
                        weight_decay=WD, momentum=MOMENTUM, trust_coefficient=TC)
  shape = (_BATCH.value, 3, _IMAGE_SIZE.value, _IMAGE_SIZE.value)
  x1 = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
  x2 = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
  compiled, note = model, 'eager'
  if _COMPILE.value:
    try:
      compiled = torch.compile(model)
      note = 'torch.compile'
    except Exception as e:  # pylint: disable=broad-except
      note = f'eager (torch.compile failed: {type(e).__name__})'
  autocast = dtype == 'bfloat16'

  def make_step(net):
    def step():
      opt.zero_grad(set_to_none=True)
      with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
        loss = net(x1, x2, M)
      loss.backward()
      opt.step()
    return step

  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  step = make_step(compiled)
  try:
    step()  # compile now, so a failure falls back before timing
  except Exception as e:  # pylint: disable=broad-except
    note = f'eager (torch.compile failed at run time: {type(e).__name__})'
    step = make_step(model)
  times = time_runs(step, sync)
  return times, {'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu',
                 'torch': torch.__version__, 'mode': note,
                 'threads': torch.get_num_threads()}


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  rows = []
  for dtype in _DTYPES.value:
    for impl in _IMPLS.value:
      times, info = {'jax': bench_jax, 'torch': bench_torch}[impl](dtype)
      median = statistics.median(times)
      rows.append({'impl': impl, 'dtype': dtype, 'median_s_per_step': median,
                   'images_per_s': _BATCH.value / median, 'times_s': times, **info})
      print(f'{impl:6s} {dtype:9s} {median * 1e3:9.1f} ms/step '
            f'{_BATCH.value / median:9.1f} img/s  ({info})', flush=True)

  print(f'\nMoCo v3 ResNet-{_DEPTH.value}, {_IMAGE_SIZE.value}px, batch {_BATCH.value}, '
        f'median of {_RUNS.value} runs x {_STEPS.value} steps')
  print(f'| dtype | jax img/s | torch img/s | jax / torch |')
  print(f'|---|---|---|---|')
  for dtype in _DTYPES.value:
    by = {r['impl']: r for r in rows if r['dtype'] == dtype}
    jax_ips = by.get('jax', {}).get('images_per_s', float('nan'))
    torch_ips = by.get('torch', {}).get('images_per_s', float('nan'))
    print(f'| {dtype} | {jax_ips:.1f} | {torch_ips:.1f} | {jax_ips / torch_ips:.2f} |')

  kind = rows[0]['device'].replace(' ', '_').lower() if rows else 'none'
  results_io.write('train_step',
                   f'train_step_{kind}_r{_DEPTH.value}_{_IMAGE_SIZE.value}px_b{_BATCH.value}',
                   {'depth': _DEPTH.value, 'image_size': _IMAGE_SIZE.value,
                    'batch': _BATCH.value}, rows, _OUT.value)

if __name__ == '__main__':
  app.run(main)
