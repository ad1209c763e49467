"""Scores a run against a world's hidden ground truth: what only a known world allows.

The explorer never reads `ground_truth.json`; this module reads it afterwards, next to
what the run recorded:

* **exploration precision** per iteration: the fraction of the iteration's stored
  downloads that the ground truth puts in a target class;
* **relevant policy mass** per iteration: the probability the policy put on concepts
  relevant to this target. Which concepts those are comes from the world: a concept is
  relevant when at least half of what its query returns (the world's own engine, over the
  world's index) is in a target class. With `config.evaluate.relevant_lexnames` set, the
  concepts of those WordNet lexicographer files instead (the demo's animals, plants, foods);
* the base rates a uniform explorer would get: the web's relevant share, and the
  vocabulary's share of relevant concepts.
"""
import glob
import logging
import os

import numpy as np

from ie_jax.web import shards
from ie_jax.worlds import world_format

log = logging.getLogger(__name__)


def load_ground_truth(world: dict) -> dict:
  return world_format.load_ground_truth(_world(world))


def _world(world: dict) -> world_format.World:
  directory = world.get('directory') or os.path.dirname(world['corpus'])
  return world_format.open_world(directory)


def is_relevant(truth: dict, url: str, corpus_dir: str) -> bool:
  """Whether the corpus image behind a file:// URL is in a target class."""
  entry = truth['images'].get(world_format.corpus_file(url, corpus_dir))
  return bool(entry) and entry.get('class') in truth['classes']


def precision_by_iteration(workdir: str, world: dict, truth: dict) -> dict[int, dict]:
  """iteration -> {'stored', 'relevant', 'precision'} over the run's stored downloads."""
  store = shards.open_run_store(workdir)
  out = {}
  for it in store.iterations():
    rows = [r for r in store.manifest(it) if r['status'] == 'ok']
    relevant = sum(is_relevant(truth, r['url'], world['corpus']) for r in rows)
    out[it] = {'stored': len(rows), 'relevant': relevant,
               'precision': relevant / len(rows) if rows else float('nan')}
  return out


def relevant_concepts(world: dict, vocab, *, images: int, lexnames=(), text_model=None,
                      truth: dict | None = None) -> np.ndarray:
  """(concepts,) bool: the concepts relevant to the world's target (module docstring)."""
  if lexnames:
    if not vocab.lexnames:
      raise ValueError('relevant_lexnames needs a WordNet vocabulary (it has lexnames).')
    return np.isin(np.asarray(vocab.lexnames), list(lexnames))
  from ie_jax.worlds import replay  # pylint: disable=g-import-not-at-top
  web = replay.load_web(_world(world), vocab.lemmas, images, text_model=text_model,
                        progress=False, truth=truth)
  return web.relevant[web.results].mean(axis=1) >= 0.5


def policy_mass(workdir: str, relevant: np.ndarray) -> dict[int, float]:
  """iteration -> the sampling distribution's mass on `relevant`, from WORKDIR/policy/."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'policy', 'iteration-*.npy'))):
    probs = np.load(path)
    if probs.shape != relevant.shape:
      log.warning('%s is over %d concepts, not %d; skipped.', path, probs.size, relevant.size)
      continue
    out[int(os.path.basename(path)[10:-4])] = float(probs[relevant].sum())
  return out


def describe_target(world: dict, truth: dict) -> str:
  name = _world(world).name
  classes = truth['classes']
  shown = ', '.join(classes[:4]) + (', ...' if len(classes) > 4 else '')
  return f"the {name} world's target ({len(classes)} classes: {shown})"


def score(workdir: str, world: dict, vocab, config) -> dict:
  truth = load_ground_truth(world)
  precision = precision_by_iteration(workdir, world, truth)
  lexnames = tuple(n for n in config.evaluate.relevant_lexnames.split(',') if n)
  relevant = relevant_concepts(world, vocab, images=config.search.images_per_query,
                               lexnames=lexnames, truth=truth,
                               text_model=config.concepts.text_model or None)
  images = truth['images'].values()
  web = sum(e.get('class') in truth['classes'] for e in images) / max(len(images), 1)
  return {'precision': {str(k): v for k, v in precision.items()},
          'relevant_mass': {str(k): v for k, v in policy_mass(workdir, relevant).items()},
          'relevant_concepts': 'lexnames ' + ','.join(lexnames) if lexnames else
                               'at least half of their results in a target class',
          'target': describe_target(world, truth),
          'web_relevant_share': web, 'vocab_relevant_share': float(relevant.mean())}
