r"""How good a starting encoder is the demo's, before it explores? The reward's AUC, fast.

  python -m ie_jax.worlds build demo --out /tmp/demo-world   # once; then index it:
  python bench/demo_encoder.py --world /tmp/demo-world --warmup_epochs 2 --eval_at 0,1,2

It builds the demo's model (configs/demo.py, with the overrides below), warms it up on a
uniform sample of the web corpus exactly as `ie_jax.warmup` does, and at each warm-up
epoch in --eval_at fine-tunes a copy on the target (`explore_setup.finetune`) and scores
the image reward (mean cosine to the 15 nearest target images) on a uniform sample of the
web against the world's ground truth: the AUC of relevant vs other images, overall and
among emoji only (the hard part: same medium, other subjects), next to a colour histogram.
This is the reward the policy would learn from in iteration 0, in minutes instead of a
whole run (`python -m ie_jax.worlds.diagnose` scores a finished run the same way).

The ground truth is read here to score, never by the explorer or the warm-up.
"""
import argparse
import json
import logging
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from configs import demo
from ie_jax import pretrain, warmup
from ie_jax.explore import setup as explore_setup
from ie_jax.data import pipeline
from ie_jax.eval import features
from ie_jax.models import imagenet_start
from ie_jax.utils import seeds, sharding
from ie_jax.worlds import diagnose, world_format
import results_io  # bench/, the script's own directory


def web_truth(world: str, urls: list[str]):
  """(relevant flags, kinds) per index row, from the world's ground truth."""
  opened = world_format.open_world(world, need_ground_truth=True)
  truth = world_format.load_ground_truth(opened)
  files = [world_format.corpus_file(u, opened.corpus) for u in urls]
  kinds = np.asarray([truth['images'].get(f, {}).get('kind', 'web') for f in files])
  return world_format.relevant_rows(opened, urls, truth), kinds


def scored_sample(config, sample: int):
  """(world, web image bytes, target training image bytes, relevant, kinds): the same
  seeded uniform sample of the web for every encoder scored, with its ground truth."""
  config.world = ''  # the world directory as it is: never built over
  world = explore_setup.load_world(config, '/nonexistent')
  target = explore_setup.load_target(explore_setup.with_world_target(config, world))
  everything = warmup.corpus_sample(world['index'], 0, seed=0)
  relevant, kinds = web_truth(config.world_dir, everything.urls)
  scored = np.random.default_rng(0).choice(len(everything), min(sample, len(everything)),
                                           replace=False)
  return (world, [everything[int(i)] for i in scored],
          [target.source[i] for i in range(len(target.source))], relevant[scored],
          kinds[scored])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python bench/demo_encoder.py')
  parser.add_argument('--world', required=True, help='a built demo world (with its index)')
  parser.add_argument('--warmup_epochs', type=float, default=2.0)
  parser.add_argument('--warmup_images', type=int, default=0, help='0: the whole corpus')
  parser.add_argument('--eval_at', default='0,1,2', help='warm-up epochs to score at')
  parser.add_argument('--image_size', type=int, default=0, help='0: the config\'s')
  parser.add_argument('--width', type=int, default=0, help='0: the config\'s')
  parser.add_argument('--finetune_epochs', type=int, default=-1, help='-1: the config\'s')
  parser.add_argument('--base_lr', type=float, default=0, help='0: the config\'s')
  parser.add_argument('--temperature', type=float, default=0, help='0: the config\'s')
  parser.add_argument('--backbone', default='', help="'': the config's; or "
                      "'efficientnet-lite0'")
  parser.add_argument('--init', default='', help='config.init_checkpoint (default: the '
                      "config's; with --backbone efficientnet-lite0, its ImageNet weights)")
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--sample', type=int, default=3000, help='web images scored')
  parser.add_argument('--out', default='', help='JSON results path')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)

  config = demo.get_config()
  config.seed = args.seed
  config.world_dir = args.world
  if args.image_size:
    config.moco.image_size = args.image_size
  if args.width:
    config.model.width = args.width
  if args.base_lr:
    config.optim.base_lr = args.base_lr
  if args.temperature:
    config.moco.temperature = args.temperature
  if args.backbone:
    config.model.backbone = args.backbone
    if args.backbone == 'efficientnet-lite0' and not args.init:
      config.init_checkpoint = imagenet_start.LITE0_WEIGHTS
  if args.init:
    config.init_checkpoint = args.init
  if args.finetune_epochs >= 0:
    config.init.finetune_epochs = args.finetune_epochs
  world, web_bytes, target_bytes, relevant, kinds = scored_sample(config, args.sample)
  mesh = sharding.make_mesh()
  model, state, step_fn = pretrain.build(config, mesh, total_steps=0)
  fresh = jax.device_get((state.step, state.opt_state))
  rng = jax.random.key(config.seed)

  k = config.reward.k
  hist = diagnose.knn_reward(np.stack([diagnose.colour_histogram(b) for b in web_bytes]),
                             np.stack([diagnose.colour_histogram(b) for b in target_bytes]), k)
  results = {'config': {k_: v for k_, v in vars(args).items()},
             'colour_histogram': diagnose.reward_quality(
                 'colour histogram', hist, relevant, kinds),
             'points': []}

  def score(name, st):
    embed = lambda images: np.asarray(features.extract(
        st, model, mesh, images, config.moco.image_size, 256, desc=name))
    rewards = diagnose.knn_reward(embed(web_bytes), embed(target_bytes), k)
    return diagnose.reward_quality(name, rewards, relevant, kinds)

  sample = warmup.corpus_sample(world['index'], args.warmup_images, seed=config.seed)
  batch = config.train.batch_size
  epochs = max(1, int(np.ceil(args.warmup_epochs)))
  per_epoch = pipeline.steps_per_pass(len(sample), 1, batch)
  data, _ = pipeline.training_dataset(
      sample, epochs=epochs, batch_size=batch, seed=seeds.stream(config.seed, 'warmup'),
      image_size=config.moco.image_size, crop_min=config.moco.crop_min,
      num_workers=config.data.num_workers)
  batches = iter(data)
  done, warm_s = 0, 0.0
  for at in sorted(float(x) for x in args.eval_at.split(',')):
    start = time.perf_counter()
    while done < int(at * per_epoch):
      state, metrics = step_fn(state, sharding.put_batch(next(batches), mesh), rng)
      done += 1
      if done % 50 == 0:
        print(f'  warm-up step {done}: loss {float(metrics["loss"]):.4f}', flush=True)
    jax.block_until_ready(state)
    warm_s += time.perf_counter() - start
    snapshot = jax.device_get(state)
    point = {'warmup_epochs': at, 'warmup_steps': done, 'warmup_s': round(warm_s, 1)}
    point['before_finetune'] = score(f'warm-up {at:g} ep', state)
    results['points'].append(point)
    if not config.init.finetune_epochs:
      _write(args, results)
      continue
    start = time.perf_counter()
    tuned = jax.device_put(snapshot.replace(step=fresh[0], opt_state=fresh[1]),
                           sharding.replicated(mesh))
    source = explore_setup.load_target(explore_setup.with_world_target(config, world)).source
    tuned, losses = explore_setup.finetune(config, tuned, step_fn, mesh, source, rng)
    point['finetune_s'] = round(time.perf_counter() - start, 1)
    point['finetune_best_epoch'] = int(np.argmin(losses))
    point['after_finetune'] = score(f'+ fine-tune {config.init.finetune_epochs} ep', tuned)
    print(json.dumps({k_: v for k_, v in point.items() if not isinstance(v, dict)}),
          flush=True)
    # After every point: a long warm-up that is stopped still leaves what it measured.
    _write(args, results)
  return 0


def _write(args, results: dict) -> None:
  results_io.write('demo_encoder', 'demo_encoder',
                   {k: v for k, v in results.items() if k != 'points'}, results['points'],
                   args.out)


if __name__ == '__main__':
  raise SystemExit(main())
