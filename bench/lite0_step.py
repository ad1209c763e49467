r"""EfficientNet-Lite0's MoCo v3 step on a CPU: XLA's grouped convolution against the sum of
shifts that `efficientnet_lite.DepthwiseConv` uses on CPU, beside the demo's ResNet-18.

  python bench/lite0_step.py [--sizes 32,64] [--batch 64] [--repeats 5]

Per configuration: compile time, the median train step (forward, backward, LARS, EMA) over
`--repeats` steps after the first, and embedding throughput. The reference run is the
same model with the depthwise layers as `lax.conv_general_dilated(feature_group_count=C)`
(what other backends use), side by side on the same machine.
"""
import argparse
import os
import statistics
import sys
import time
from unittest import mock

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from ie_jax import optim, train
from ie_jax.data import photometric
from ie_jax.models import moco
from ie_jax.utils import sharding
import results_io  # bench/, the script's own directory


def measure(name: str, model, size: int, batch: int, repeats: int) -> dict:
  mesh = sharding.make_mesh()
  tx = optim.lars(0.2, 1e-6, 0.9, 1e-3)
  state = train.create_train_state(jax.random.key(0), model, tx, size)
  step = train.make_train_step(mesh, model=model, tx=tx, learning_rate=lambda s: 0.2,
                               ema_momentum=optim.constant_momentum(0.99), temperature=1.0,
                               augment=photometric.moco_v3_views)
  embed = train.make_embed_step(mesh, model=model)
  rng = np.random.RandomState(0)
  views = {'view1': rng.randint(0, 256, (batch, size, size, 3), np.uint8),
           'view2': rng.randint(0, 256, (batch, size, size, 3), np.uint8)}
  start = time.perf_counter()
  state, metrics = step(state, views, jax.random.key(1))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = step(state, views, jax.random.key(1))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  images = rng.randint(0, 256, (256, size, size, 3), np.uint8)
  jax.block_until_ready(embed(state, images))
  start = time.perf_counter()
  jax.block_until_ready(embed(state, images))
  embed_s = time.perf_counter() - start
  step_s = statistics.median(times)
  row = {'model': name, 'size': size, 'batch': batch, 'compile_s': round(compile_s, 1),
         'step_s_median': round(step_s, 4), 'train_images_per_s': round(batch / step_s, 1),
         'embed_images_per_s': round(256 / embed_s, 1)}
  print(f'{name:<42} {size:>4} px  compile {compile_s:6.1f} s  step {step_s:7.3f} s '
        f'({batch / step_s:6.1f} img/s)  embed {256 / embed_s:7.1f} img/s', flush=True)
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default='32,64')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  rows = []
  lite = moco.MoCoV3(backbone='efficientnet-lite0', dim=64, mlp_dim=256)
  for size in (int(s) for s in args.sizes.split(',')):
    rows.append(measure('resnet-18 width 16, small stem (demo)',
                        moco.MoCoV3(depth=18, width=16, small_stem=True, dim=64, mlp_dim=256),
                        size, args.batch, args.repeats))
    rows.append(measure('efficientnet-lite0, sum of shifts (ie_jax)', lite, size, args.batch,
                        args.repeats))
    # The reference: the backend switch in DepthwiseConv taken as on a GPU.
    with mock.patch.object(jax, 'default_backend', lambda: 'gpu'):
      rows.append(measure('efficientnet-lite0, grouped conv (reference)', lite, size,
                          args.batch, args.repeats))
    ratio = rows[-1]['step_s_median'] / rows[-2]['step_s_median']
    print(f'  sum of shifts vs grouped convolution at {size} px: {ratio:.2f}x faster per step')
  results_io.write('lite0_step', 'lite0_step_cpu', {'config': vars(args)}, rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
