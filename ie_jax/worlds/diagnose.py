r"""Where does a demo run's precision come from: the reward, or the policy?

  python -m ie_jax.worlds.diagnose --world runs/demo/world --workdir runs/demo \
      [--config configs/demo.py] [--iterations 8] [--sample 3000]

Needs a world with a ground truth. It prints:

1. **Reward quality** of the run's last encoder on a uniform sample of the web: the AUC of
   the image reward (mean cosine to the 15 nearest target images) for target-relevant vs
   other images, the same among emoji only, and the precision of the top tenth by reward;
   next to a colour-histogram encoder as a floor.
2. **Policy replays** that hold the encoder fixed and re-run the explore loop's query side
   (sample, search, score, GPR update) over the whole web with the run's config, for
   `random`, for `learned` on the encoder's rewards, and for `learned` on an oracle reward
   (1 for relevant images, 0 otherwise). The oracle shows what the policy can do with a
   perfect reward; the gap to it is the reward's.
"""
import argparse
import dataclasses
import glob
import importlib.util
import io
import json
import os
import urllib.parse

import numpy as np
from PIL import Image

from ie_jax import explorer_setup
from ie_jax.concepts import policy
from ie_jax.eval import features
from ie_jax.utils import sharding
from ie_jax.web import local


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Probability that a random relevant item outscores a random other one (ties: half)."""
  order = np.argsort(scores, kind='stable')
  ranks = np.empty(len(scores))
  ranks[order] = np.arange(1, len(scores) + 1)
  for value in np.unique(scores):  # average ranks of ties
    tied = scores == value
    ranks[tied] = ranks[tied].mean()
  pos, neg = labels.sum(), (~labels).sum()
  return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def knn_reward(web: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
  web = web / np.linalg.norm(web, axis=1, keepdims=True).clip(1e-12)
  target = target / np.linalg.norm(target, axis=1, keepdims=True).clip(1e-12)
  return np.sort(web @ target.T, axis=1)[:, -k:].mean(axis=1)


def colour_histogram(png: bytes) -> np.ndarray:
  pixels = np.asarray(Image.open(io.BytesIO(png)).convert('RGB').resize((32, 32)))
  bins = pixels.reshape(-1, 3) // 64
  hist = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64)
  hist = hist.astype(np.float64)
  hist[63] = 0  # the white background
  return np.sqrt(hist) + 1e-6


def reward_quality(name: str, rewards, relevant, emoji) -> dict:
  top = np.argsort(-rewards)[:max(1, len(rewards) // 10)]
  out = {'encoder': name, 'auc': _auc(relevant, rewards),
         'auc_emoji_only': _auc(relevant[emoji], rewards[emoji]),
         'top_tenth_precision': float(relevant[top].mean()),
         'base_rate': float(relevant.mean())}
  print(f'{name:>18}: AUC {out["auc"]:.3f}, among emoji {out["auc_emoji_only"]:.3f}, '
        f'top-tenth precision {out["top_tenth_precision"]:.3f} (base {out["base_rate"]:.3f})')
  return out


def replay_policy(config, embeddings, rows_of, image_reward, relevant, iterations: int,
                  mode: str) -> list[float]:
  """Precision per iteration of the explore loop's query side with fixed image rewards."""
  cfg = dataclasses.replace(explorer_setup.policy_config(config), mode=mode)
  obs = policy.Observations(len(embeddings))
  seen, precisions = set(), []
  ex = config.explore
  for it in range(iterations):
    probs = policy.distribution(embeddings, obs, cfg)
    drawn = policy.sample_concepts(probs, ex.queries_per_iteration, seed=config.seed + it,
                                   replace=config.concepts.sample_with_replacement)
    got, concepts, scores = [], [], []
    for c in drawn:
      new = [r for r in rows_of(int(c)) if r not in seen]
      seen.update(new)
      got.extend(new)
      if new:
        concepts.append(int(c))
        scores.append(policy.concept_score(image_reward[new], top_k=ex.top_images_per_concept,
                                           min_images=ex.min_images_per_query))
    obs = obs.add(concepts, scores)
    precisions.append(float(relevant[got].mean()) if got else float('nan'))
  return precisions


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ie_jax.worlds.diagnose')
  parser.add_argument('--world', required=True)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--iterations', type=int, default=8)
  parser.add_argument('--sample', type=int, default=3000)
  args = parser.parse_args(argv)
  spec = importlib.util.spec_from_file_location('diagnosed_config', args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()

  with open(os.path.join(args.world, 'ground_truth.json'), encoding='utf-8') as f:
    truth = json.load(f)
  engine = local.LocalEngine(os.path.join(args.world, 'index'))
  corpus = os.path.realpath(os.path.join(args.world, 'corpus'))
  files = [os.path.relpath(urllib.parse.unquote(urllib.parse.urlsplit(u).path), corpus)
           for u in engine.index.urls]
  relevant = np.asarray([truth['images'][f]['subgroup'] in truth['classes'] for f in files])
  emoji = np.asarray([truth['images'][f]['style'] not in ('mdi', 'game_icons') for f in files])
  read = lambda f: open(os.path.join(corpus, f), 'rb').read()  # pylint: disable=consider-using-with
  target = [open(p, 'rb').read() for p in sorted(glob.glob(  # pylint: disable=consider-using-with
      os.path.join(args.world, 'target', 'train', '*', '*.png')))]

  mesh = sharding.make_mesh()
  step, saved = features.resolve(args.workdir, config, None)
  state, model = features.restore(args.workdir, saved, mesh, step)
  embed = lambda images: np.asarray(features.extract(state, model, mesh, images,
                                                     saved.moco.image_size, 256))
  web_features = embed([read(f) for f in files])  # the whole web, for the replays
  target_features = embed(target)
  k = config.explore.reward_k
  image_reward = knn_reward(web_features, target_features, k)

  print(f'1. Reward quality on {args.sample} random web images')
  sample = np.random.default_rng(0).choice(len(files), min(args.sample, len(files)), False)
  hist_reward = knn_reward(np.stack([colour_histogram(read(files[i])) for i in sample]),
                           np.stack([colour_histogram(t) for t in target]), k)
  results = {'reward': [
      reward_quality('colour histogram', hist_reward, relevant[sample], emoji[sample]),
      reward_quality(f'run step {step}', image_reward[sample], relevant[sample],
                     emoji[sample])]}

  print(f'2. Policy replays ({args.iterations} iterations, encoder fixed at step {step})')
  vocab, embeddings = explorer_setup.load_concepts(config, None)
  queries = engine._embedder.embed(list(vocab.lemmas), progress=False)  # pylint: disable=protected-access
  matrix = engine.index.embeddings.astype(np.float32)
  n = config.explore.images_per_query
  rows_of = lambda c: np.argsort(-(matrix @ queries[c]))[:n]
  oracle = relevant.astype(np.float64)
  results['replays'] = {}
  for name, mode, rewards in (('random', 'random', image_reward),
                              ('learned', 'learned', image_reward),
                              ('learned, oracle reward', 'learned', oracle)):
    curve = replay_policy(config, embeddings, rows_of, rewards, relevant, args.iterations,
                          mode)
    results['replays'][name] = curve
    print(f'{name:>24}: ' + ' '.join(f'{p:.3f}' for p in curve))
  out = os.path.join(args.workdir, 'report', 'diagnosis.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'Written to {out}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
