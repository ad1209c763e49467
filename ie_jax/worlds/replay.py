r"""Replays the explore loop's query side on a world whose relevance is known.

  python -m ie_jax.worlds.replay --world DIR [--config configs/demo.py[:ARGS]] \
      [--seeds 0,1,2] [--iterations N] [--json OUT]

Nothing is trained or downloaded: the engine's results for every concept are computed once
from the world's search index, and each policy draws queries, "downloads" what is new, and
is scored per iteration by the share of new images that are relevant (the precision the
real run reports). Three choosers, at the run config's budget (iterations x queries x
images per query) and with its seeds:

* **random**: uniform draws over the vocabulary;
* **learned, oracle reward**: the explorer's own policy and query scoring (`policy.py`),
  fed a perfect image reward (1 for a relevant image, 0 otherwise): what the policy can do
  when the reward is right;
* **ceiling**: an omniscient greedy chooser that picks each iteration's queries by how
  many new relevant images their results hold.

`--reward_auc 0.7,0.9` adds a `learned` row per value, fed a synthetic reward of that
quality: relevant + noise, unstructured (`synthetic_reward`). It answers how good a reward
the policy needs on the world; a real encoder's errors are structured (whole families of
images score high together), so it is an upper bound for an encoder of the same AUC
(`python -m ie_jax.worlds.diagnose` replays a run's real reward).

It prints precision per iteration and the share of the room between random and the
ceiling that the learned policy captures. Fast: a minute for three seeds on the demo world
once the concept and query embeddings are cached.
"""
import argparse
import dataclasses
import json
import logging
import statistics
import sys

import numpy as np
import tqdm

from ie_jax.concepts import caption_gp, policy, query_scores, sampling
from ie_jax.utils import seeds
from ie_jax.worlds import world_format

log = logging.getLogger(__name__)

_CHUNK = 512  # concepts per matrix product when tabulating the engine's results


@dataclasses.dataclass(frozen=True, eq=False)
class Web:
  """What a replay needs of a world: each concept's results, and which images count.

  Attributes:
    results: (concepts, n) index rows each concept's query returns, best first (-1: none).
    relevant: (rows,) bool, the ground truth of each index row.
    captions: (rows, d) unit embeddings of each row's caption (for `gp_points='captions'`:
      the engine's title of an image, embedded as the explorer embeds it), or None.
  """
  results: np.ndarray
  relevant: np.ndarray
  captions: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Budget:
  iterations: int
  queries: int
  images: int


def engine_results(index_embeddings, query_embeddings, n: int, progress: bool = True):
  """(queries, n) rows of the n captions nearest each query, as `LocalEngine.rows` ranks
  them: by cosine, ties to the lower row (exact in float64 near the n-th place)."""
  matrix = np.asarray(index_embeddings, np.float32)
  queries = np.asarray(query_embeddings, np.float32)
  n = min(n, len(matrix))
  out = np.empty((len(queries), n), np.int64)
  for start in tqdm.trange(0, len(queries), _CHUNK, desc='engine results', unit='chunk',
                           disable=not progress):
    block = queries[start:start + _CHUNK]
    scores = block @ matrix.T
    nth = -np.partition(-scores, n - 1, axis=1)[:, n - 1]
    for i, q in enumerate(block):
      candidates = np.flatnonzero(scores[i] >= nth[i] - 1e-5)
      exact = np.asarray(index_embeddings[candidates], np.float64) @ q.astype(np.float64)
      out[start + i] = candidates[np.lexsort((candidates, -exact))][:n]
  return out


def oracle_reward(relevant: np.ndarray) -> np.ndarray:
  return relevant.astype(np.float64)


def synthetic_reward(relevant: np.ndarray, auc: float, seed: int = 0) -> np.ndarray:
  """An image reward whose AUC for relevant vs other images is `auc` in expectation:
  d * relevant + N(0, 1), with d = sqrt(2) * Phi^-1(auc) (the AUC of two unit normals d
  apart is Phi(d / sqrt(2)))."""
  if not 0.5 <= auc < 1:
    raise ValueError(f'A synthetic reward needs 0.5 <= AUC < 1, not {auc}.')
  d = np.sqrt(2.0) * statistics.NormalDist().inv_cdf(auc)
  noise = np.random.default_rng(seed).standard_normal(len(relevant))
  return d * np.asarray(relevant, np.float64) + noise


def run_policy(web: Web, embeddings, policy_config: policy.PolicyConfig,
               scoring: query_scores.QueryScoring, budget: Budget, *, seed: int,
               image_reward=None, queries=None) -> dict:
  """The explore loop's query side for `budget.iterations`, with fixed image rewards.

  Draws, seeds and scoring are the explorer's (`Explorer._sample`, `Explorer.update`).

  Returns:
    {'precision': per iteration, 'new': new images per iteration, 'dry': drawn queries
     per iteration that returned no new image}.
  """
  image_reward = oracle_reward(web.relevant) if image_reward is None else image_reward
  vocab_size = len(embeddings)
  obs = policy.Observations(vocab_size)
  images = caption_gp.ImageObservations()
  if policy_config.gp_points == 'captions' and web.captions is None:
    raise ValueError("gp_points='captions' needs the web's caption embeddings.")
  searched = policy.Searched(np.arange(vocab_size) if queries is None else queries)
  seen = np.zeros(len(web.relevant), bool)
  out = {'precision': [], 'new': [], 'dry': [], 'drawn': []}
  for it in range(budget.iterations):
    probs = policy.distribution(embeddings, obs, policy_config, searched=searched,
                                images=images)
    drawn = sampling.sample_queries(
        probs, budget.queries, mode=policy_config.mode, seed=seeds.stream(seed, 'queries', it),
        replace=policy_config.replace,
        groups=None if policy_config.redraw_searched else searched.queries).concepts
    new_rows, results = [], []
    for c in drawn:
      rows = web.results[c, :budget.images]
      rows = rows[rows >= 0]
      fresh = rows[~seen[rows]]
      seen[fresh] = True
      new_rows.append(fresh)
      results.append(query_scores.QueryResult(concept=int(c), requested=budget.images,
                                        new=image_reward[fresh],
                                        old=image_reward[np.setdiff1d(rows, fresh)]))
    concepts, scores = query_scores.score_queries(results, scoring)
    obs = obs.add(concepts, scores)
    searched = searched.add(drawn)
    got = np.concatenate(new_rows) if new_rows else np.zeros((0,), np.int64)
    if policy_config.gp_points == 'captions':  # the explorer's `update`: kept images
      images = images.add(got.astype(np.uint64), web.captions[got], image_reward[got],
                          policy_config.max_captions)
    out['precision'].append(float(web.relevant[got].mean()) if len(got) else float('nan'))
    out['new'].append(int(len(got)))
    out['dry'].append(int(sum(len(r) == 0 for r in new_rows)))
    out['drawn'].append(drawn)
  return out


def ceiling(web: Web, budget: Budget) -> dict:
  """An omniscient greedy chooser: each iteration, query after query, the concept whose
  results hold the most new relevant images, then the fewest new others (ties to the lower
  index); no concept twice."""
  results = web.results[:, :budget.images]
  valid = results >= 0
  safe = np.where(valid, results, 0)
  seen = np.zeros(len(web.relevant), bool)
  used = np.zeros(len(results), bool)
  out = {'precision': [], 'new': [], 'dry': []}
  for _ in range(budget.iterations):
    got = []
    for _ in range(budget.queries):
      fresh = valid & ~seen[safe]
      good = (web.relevant[safe] & fresh).sum(axis=1)
      gain = good * (budget.images + 1) - (fresh.sum(axis=1) - good)
      gain[used] = np.iinfo(gain.dtype).min
      c = int(np.argmax(gain))
      used[c] = True
      rows = results[c][valid[c]]
      fresh = rows[~seen[rows]]
      seen[fresh] = True
      got.append(fresh)
    got = np.concatenate(got)
    out['precision'].append(float(web.relevant[got].mean()) if len(got) else float('nan'))
    out['new'].append(int(len(got)))
    out['dry'].append(0)
  return out


def random_policy_config(config: policy.PolicyConfig) -> policy.PolicyConfig:
  return dataclasses.replace(config, mode='random')


def captured(random_mean: float, learned_mean: float, ceiling_mean: float) -> float:
  """The share of the room between random and the ceiling that `learned` takes."""
  room = ceiling_mean - random_mean
  return (learned_mean - random_mean) / room if room > 0 else float('nan')


def compare(web: Web, embeddings, policy_config: policy.PolicyConfig,
            scoring: query_scores.QueryScoring, budget: Budget, seeds, queries=None,
            reward_aucs=()) -> dict:
  """Random, learned with the oracle reward (and with synthetic rewards of the AUCs in
  `reward_aucs`), and the ceiling over `seeds`."""
  rows = {'random': {}, 'learned, oracle reward': {}}
  rewards = {'learned, oracle reward': None}
  for auc in reward_aucs:
    rows[f'learned, reward AUC {auc:.2f}'] = {}
  for seed in seeds:
    rows['random'][seed] = run_policy(web, embeddings, random_policy_config(policy_config),
                                      scoring, budget, seed=seed, queries=queries)
    for auc in reward_aucs:  # a fresh draw of the noise per seed, as a fresh encoder's
      rewards[f'learned, reward AUC {auc:.2f}'] = synthetic_reward(web.relevant, auc, seed)
    for name, reward in rewards.items():
      rows[name][seed] = run_policy(web, embeddings, policy_config, scoring, budget,
                                    seed=seed, image_reward=reward, queries=queries)
  top = ceiling(web, budget)  # deterministic: the same for every seed
  rows['ceiling'] = {seed: top for seed in seeds}
  means = {name: float(np.mean([np.nanmean(r['precision']) for r in runs.values()]))
           for name, runs in rows.items()}
  return {'runs': rows, 'means': means,
          'captured': captured(means['random'], means['learned, oracle reward'],
                               means['ceiling'])}


def print_table(result: dict, seeds, file=sys.stdout) -> None:
  print(f'{"chooser":<24} | ' + ' | '.join(f'seed {s}: precision per iteration, %'
                                            for s in seeds) + ' | mean', file=file)
  for name, runs in result['runs'].items():
    cells = [' '.join(f'{100 * p:.1f}' for p in runs[s]['precision']) for s in seeds]
    print(f'{name:<24} | ' + ' | '.join(cells) + f' | {100 * result["means"][name]:.1f}',
          file=file)
  print(f'learned captures {100 * result["captured"]:.0f}% of the room between random and '
        'the ceiling', file=file)


def load_web(world: world_format.World, lemmas, images: int, *, text_model=None,
             progress: bool = True, truth: dict | None = None) -> Web:
  """The engine's results for every concept's query (its lemma), and the ground truth."""
  from ie_jax.concepts import text_embed  # pylint: disable=g-import-not-at-top
  from ie_jax.web import local_index  # pylint: disable=g-import-not-at-top
  index = local_index.load(world.index, corpus_dir=world.corpus)
  if index.embeddings is None:
    raise ValueError(f'{world.index} is a keyword-only index; the replay needs embeddings.')
  embedder = local_index.load_embedder(text_model)
  queries = text_embed.embed_cached(list(lemmas), embedder, progress=progress)
  relevant = world_format.relevant_rows(world, index.urls, truth)
  return Web(engine_results(index.embeddings, queries, images, progress), relevant,
             np.asarray(index.embeddings, np.float32))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ie_jax.worlds.replay', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--world', required=True, help='a world directory with ground truth')
  parser.add_argument('--config', default='configs/demo.py',
                      help='a config file, with :ARGS (default: configs/demo.py)')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--iterations', type=int, default=0, help='0: the config\'s')
  parser.add_argument('--json', default='', help='also write the results here')
  parser.add_argument('--reward_auc', default='',
                      help='e.g. 0.7,0.9: also replay with synthetic rewards of these AUCs')
  args = parser.parse_args(argv)
  try:
    aucs = [float(a) for a in args.reward_auc.split(',') if a.strip()]
    for auc in aucs:
      synthetic_reward(np.zeros(1, bool), auc)  # checks the range before the slow part
  except ValueError as e:
    print(f'error: --reward_auc: {e}', file=sys.stderr)
    return 1
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  from ie_jax.concepts import from_config  # pylint: disable=g-import-not-at-top
  from ie_jax.utils import config_files  # pylint: disable=g-import-not-at-top
  try:
    world = world_format.open_world(args.world, need_ground_truth=True)
  except world_format.WorldError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  config = config_files.load(args.config)
  budget = Budget(args.iterations or config.explore.iterations,
                  config.search.queries_per_iteration, config.search.images_per_query)
  vocab, embeddings = from_config.load_concepts(config, None)
  web = load_web(world, vocab.lemmas, budget.images,
                 text_model=config.concepts.text_model or None)
  seeds = [int(s) for s in args.seeds.split(',')]
  result = compare(web, embeddings, from_config.policy_config(config),
                   from_config.query_scoring(config), budget, seeds,
                   queries=policy.Searched.by_text(vocab.lemmas).queries, reward_aucs=aucs)
  print(f'{world.name}: {len(web.relevant)} web images, {100 * web.relevant.mean():.2f}% '
        f'relevant; {len(vocab)} concepts; {budget.iterations} iterations x '
        f'{budget.queries} queries x {budget.images} images')
  print_table(result, seeds)
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump({'world': world.name, 'budget': dataclasses.asdict(budget),
                 'config': args.config, **result}, f, indent=1, default=str)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
