r"""Where the replayed policy loses to the ceiling: the sampling, or the GP's prediction?

  python bench/policy_limits.py --world WORLD [--seeds 0,1,2,3,4,5] [--config configs/demo.py]

Two measurements on a world with ground truth, at the config's budget (docs/DECISIONS.md,
"The policy in a finite web"):

1. The policy's sampling (range softmax, tiers, no redraws) fed each concept's *true*
   relevant share of its engine results in place of the GP's prediction: once the share of
   all its results, once of those not yet downloaded. Next to random and the greedy ceiling
   of `python -m ie_jax.worlds.replay`. If these come near the ceiling, the sampling is
   not what loses the room.
2. The GP's ranking from uniform observations of those shares: the mean relevant share of
   the 64 unobserved concepts it ranks highest, for several inputs, length scales, mu vs
   mu + sigma, and a ridge regression on the same features; and, from the same queries,
   predictors fitted to their results' captions (the caption GP of `gp_input='captions'`,
   and the mean relevance of the 10 seen captions nearest each query).

Prints both tables and writes bench/results/policy_limits_<world>.json.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
from ie_jax.concepts import caption_gp, from_config, gpr, policy, sampling
from ie_jax.utils import config_files, seeds
from ie_jax.worlds import replay, world_format
import results_io  # bench/, the script's own directory


def true_share_policy(web, queries, config, budget, seed: int, novelty: bool) -> float:
  """Mean precision of the policy's sampling over the true (new) relevant shares."""
  results = web.results[:, :budget.images]
  relevant = web.relevant[results] & (results >= 0)
  seen = np.zeros(len(web.relevant), bool)
  searched = policy.Searched(queries)
  precision = []
  for it in range(budget.iterations):
    allowed = ~searched.mask
    share = (relevant & ~seen[results]).mean(1) if novelty else relevant.mean(1)
    probs = np.zeros(len(results))
    if it == 0:
      probs[allowed] = 1.0 / allowed.sum()
    else:
      probs[allowed] = policy.tier(policy.range_softmax(share[allowed], config.smr),
                                   config.tier_bounds, config.tier_masses)
    drawn = sampling.sample_concepts(probs, budget.queries, seed=seeds.stream(seed, 'queries', it),
                                   groups=searched.queries)
    got = []
    for c in drawn:
      rows = results[c][results[c] >= 0]
      fresh = rows[~seen[rows]]
      seen[fresh] = True
      got.append(fresh)
    searched = searched.add(drawn)
    got = np.concatenate(got)
    precision.append(web.relevant[got].mean() if len(got) else np.nan)
  return float(np.nanmean(precision))


def gp_ranking(share, features: dict, observed: int, seeds, top: int = 64,
               captions=None) -> dict:
  """Mean true share of the `top` unobserved concepts each predictor ranks highest."""
  from sklearn.linear_model import Ridge  # pylint: disable=g-import-not-at-top
  out = {}
  for seed in seeds:
    rng = np.random.default_rng(seed)
    obs = rng.choice(len(share), observed, replace=False)
    rest = np.setdiff1d(np.arange(len(share)), obs)
    for name, x in features.items():
      for length_scale in (0.3, 0.5, 0.8, 1.2):
        fit = gpr.gpr_fit(x[obs], share[obs], length_scale=length_scale, alpha=1e-2,
                          normalize_y=True)
        mean, std = (np.asarray(a) for a in gpr.gpr_predict(fit, x[rest]))
        for kind, score in (('mu', mean), ('mu+sigma', mean + std)):
          key = f'GP on {name}, length scale {length_scale}, {kind}'
          out.setdefault(key, []).append(share[rest[np.argsort(-score)[:top]]].mean())
      ridge = Ridge(alpha=1.0).fit(x[obs], share[obs]).predict(x[rest])
      out.setdefault(f'ridge on {name}', []).append(share[rest[np.argsort(-ridge)[:top]]].mean())
    if captions is not None:
      for key, score in caption_predictions(captions, obs, rest).items():
        out.setdefault(key, []).append(share[rest[np.argsort(-score)[:top]]].mean())
  return {k: float(np.mean(v)) for k, v in out.items()}


def caption_predictions(captions, observed, rest) -> dict:
  """Scores of the `rest` concepts from the captions the `observed` queries brought.

  Args:
    captions: (web, results, relevant, query embeddings).
  """
  web_captions, results, relevant, queries = captions
  seen = np.unique(results[observed][results[observed] >= 0])
  images = caption_gp.ImageObservations().add(seen.astype(np.uint64), web_captions[seen],
                                          relevant[seen], limit=len(seen))
  out = {}
  for length_scale in (0.3, 0.5, 0.8):
    out[f'caption GP, length scale {length_scale}, mu+sigma'] = caption_gp.caption_scores(
        queries[rest], images, length_scale=length_scale)
  sims = queries[rest] @ web_captions[seen].T
  nearest = np.argpartition(-sims, 9, axis=1)[:, :10]
  out['k-NN over seen captions (10)'] = relevant[seen][nearest].mean(axis=1)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--world', required=True)
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--seeds', default='0,1,2,3,4,5')
  parser.add_argument('--observed', default='128,256', help='uniform observations for 2.')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  world = world_format.open_world(args.world, need_ground_truth=True)
  config = config_files.load(args.config)
  budget = replay.Budget(config.explore.iterations, config.search.queries_per_iteration,
                         config.search.images_per_query)
  vocab, embeddings = from_config.load_concepts(config, None)
  web = replay.load_web(world, vocab.lemmas, budget.images,
                        text_model=config.concepts.text_model or None)
  queries = policy.Searched.by_text(vocab.lemmas).queries
  policy_config = from_config.policy_config(config)
  scoring = from_config.query_scoring(config)
  base = replay.compare(web, embeddings, policy_config, scoring, budget, seeds,
                        queries=queries)
  rows = {**base['means'],
          'sampling over the true relevant share': float(np.mean(
              [true_share_policy(web, queries, policy_config, budget, s, False)
               for s in seeds])),
          'sampling over the true share of new relevant results': float(np.mean(
              [true_share_policy(web, queries, policy_config, budget, s, True)
               for s in seeds]))}
  print(f'{world.name}: mean precision over {budget.iterations} iterations, seeds {seeds}')
  for name, value in rows.items():
    print(f'  {name:<55} {100 * value:5.1f}%')
  results = web.results[:, :budget.images]
  share = (web.relevant[results] & (results >= 0)).mean(1)
  both_config = config.copy_and_resolve_references()
  both_config.concepts.gp_input = 'text+query'
  _, both = from_config.load_concepts(both_config, None)  # [sense text, query] / sqrt 2
  both = np.asarray(both)
  features = {'sense text + query': both, 'sense text': both[:, :384] * np.sqrt(2),
              'query': both[:, 384:] * np.sqrt(2)}
  captions = (web.captions, results, web.relevant.astype(np.float64), features['query'])
  ranking = {}
  for n in (int(x) for x in args.observed.split(',')):
    ranking[n] = gp_ranking(share, features, n, seeds[:3], captions=captions)
    best = sorted(ranking[n].items(), key=lambda kv: -kv[1])
    print(f'  top 64 after {n} uniform queries (true relevant share): best '
          f'{best[0][1]:.2f} ({best[0][0]}), worst {best[-1][1]:.2f} ({best[-1][0]})')
    concept_best = max(v for k, v in ranking[n].items() if not k.startswith(('caption', 'k-NN')))
    print(f'    best concept-level predictor {concept_best:.2f}; ' + '; '.join(
        f'{k} {v:.2f}' for k, v in ranking[n].items() if k.startswith(('caption', 'k-NN'))))
  results_io.write('policy_limits', f'policy_limits_{world.name}',
                   {'config': vars(args), 'budget': vars(budget)},
                   [{'precision': rows, 'gp_top64_share': ranking}], args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
