r"""Where does a run's precision come from: the reward, or the policy?

  python -m ie_jax.worlds.diagnose --workdir runs/demo [--world DIR] [--iterations 8] \
      [--sample 3000]

Reads the run's own config from its last checkpoint (seed and policy included) and its
world (default: the world the run explored). Needs a world with a ground truth. It prints:

1. **Reward quality** of the run's last encoder on a uniform sample of the web: the AUC of
   the image reward (mean cosine to the 15 nearest target images) for target-relevant vs
   other images, the same within each kind of web image the ground truth names (e.g.
   emoji, icon), and the precision of the top tenth by reward; next to a colour-histogram
   encoder as a floor.
2. **Policy replays** (`replay.py`) that hold the encoder fixed and re-run the explore
   loop's query side over the whole web with the run's config: `random`, `learned` on the
   encoder's rewards, `learned` on an oracle reward (1 for relevant images, 0 otherwise),
   and the omniscient ceiling. The gap between the two learned rows is the reward's.
"""
import argparse
import collections
import functools
import glob
import io
import json
import os

import numpy as np
from PIL import Image

from ie_jax import reward
from ie_jax.concepts import from_config, policy
from ie_jax.eval import features
from ie_jax.utils import sharding
from ie_jax.web import local_index
from ie_jax.worlds import replay, world_format


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
  """The run's own reward (`reward.make_knn_reward`) on any features, L2-normalised here
  (the encoder's already are; colour histograms are not)."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
  return _reward_fn(k)(unit(np.asarray(web, np.float32)), unit(np.asarray(target, np.float32)))


@functools.lru_cache(maxsize=4)
def _reward_fn(k: int):
  # Built once per k: a fresh one per call would compile the reward again each time.
  return reward.make_knn_reward(sharding.make_mesh(), k=k)


def colour_histogram(png: bytes) -> np.ndarray:
  pixels = np.asarray(Image.open(io.BytesIO(png)).convert('RGB').resize((32, 32)))
  bins = pixels.reshape(-1, 3) // 64
  hist = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64)
  hist = hist.astype(np.float64)
  hist[63] = 0  # the white background
  return np.sqrt(hist) + 1e-6


def reward_quality(name: str, rewards, relevant, kinds) -> dict:
  top = np.argsort(-rewards)[:max(1, len(rewards) // 10)]
  out = {'encoder': name, 'auc': _auc(relevant, rewards),
         'top_tenth_precision': float(relevant[top].mean()),
         'base_rate': float(relevant.mean())}
  for kind in sorted(set(kinds)):  # within one kind of image: looks alone must decide
    inside = kinds == kind
    if relevant[inside].any() and (~relevant[inside]).any():
      out[f'auc_{kind}_only'] = _auc(relevant[inside], rewards[inside])
  within = ', '.join(f'among {k[4:-5]} {v:.3f}' for k, v in out.items()
                     if k.startswith('auc_'))
  print(f'{name:>18}: AUC {out["auc"]:.3f} ({within}), top-tenth precision '
        f'{out["top_tenth_precision"]:.3f} (base {out["base_rate"]:.3f})')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ie_jax.worlds.diagnose')
  parser.add_argument('--workdir', required=True, help='the run to diagnose')
  parser.add_argument('--world', default='', help="default: the run's own world")
  parser.add_argument('--iterations', type=int, default=0, help="0: the run's")
  parser.add_argument('--sample', type=int, default=3000)
  args = parser.parse_args(argv)
  mesh = sharding.make_mesh()
  step, config = features.resolve(args.workdir, None, None)
  state, model = features.restore(args.workdir, config, mesh, step)
  directory = args.world or config.world_dir or os.path.join(args.workdir, 'world')
  try:
    world = world_format.open_world(directory, need_ground_truth=True)
  except world_format.WorldError as e:
    print(f'error: {e}', file=__import__('sys').stderr)
    return 1
  truth = world_format.load_ground_truth(world)
  index = local_index.load(world.index, corpus_dir=world.corpus)
  files = [world_format.corpus_file(u, world.corpus) for u in index.urls]
  relevant = world_format.relevant_rows(world, index.urls, truth)
  kinds = np.asarray([truth['images'].get(f, {}).get('kind', 'web') for f in files])
  read = lambda f: open(os.path.join(world.corpus, f), 'rb').read()  # pylint: disable=consider-using-with
  target = [open(p, 'rb').read() for p in sorted(glob.glob(  # pylint: disable=consider-using-with
      os.path.join(world.target, 'train', '*', '*')))]

  embed = lambda images: np.asarray(features.extract(state, model, mesh, images,
                                                     config.moco.image_size, 256))
  web_features = embed([read(f) for f in files])  # the whole web, for the replays
  target_features = embed(target)
  k = config.reward.k
  image_reward = knn_reward(web_features, target_features, k)

  print(f'1. Reward quality on {args.sample} random web images')
  sample = np.random.default_rng(0).choice(len(files), min(args.sample, len(files)), False)
  hist_reward = knn_reward(np.stack([colour_histogram(read(files[i])) for i in sample]),
                           np.stack([colour_histogram(t) for t in target]), k)
  results = {'reward': [
      reward_quality('colour histogram', hist_reward, relevant[sample], kinds[sample]),
      reward_quality(f'run step {step}', image_reward[sample], relevant[sample],
                     kinds[sample])]}

  budget = replay.Budget(args.iterations or config.explore.iterations,
                         config.search.queries_per_iteration, config.search.images_per_query)
  print(f'2. Policy replays ({budget.iterations} iterations, encoder fixed at step {step}, '
        f'seed {config.seed})')
  vocab, embeddings = from_config.load_concepts(config, None)  # cached embeddings
  web = replay.load_web(world, vocab.lemmas, budget.images,
                        text_model=config.concepts.text_model or None, truth=truth)
  queries = policy.Searched.by_text(vocab.lemmas).queries
  learned = from_config.policy_config(config)
  scoring = from_config.query_scoring(config)
  runs = collections.OrderedDict()
  runs['random'] = replay.run_policy(web, embeddings, replay.random_policy_config(learned),
                                     scoring, budget, seed=config.seed, queries=queries)
  runs['learned'] = replay.run_policy(web, embeddings, learned, scoring, budget,
                                      seed=config.seed, image_reward=image_reward,
                                      queries=queries)
  runs['learned, oracle reward'] = replay.run_policy(web, embeddings, learned, scoring,
                                                     budget, seed=config.seed,
                                                     queries=queries)
  runs['ceiling'] = replay.ceiling(web, budget)
  results['replays'] = {}
  for name, run in runs.items():
    results['replays'][name] = run['precision']
    print(f'{name:>24}: ' + ' '.join(f'{p:.3f}' for p in run['precision']) +
          f'  (mean {np.nanmean(run["precision"]):.3f})')
  out = os.path.join(args.workdir, 'report', 'diagnosis.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'Written to {out}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
