"""Scores a run against a world's hidden ground truth: what only a known world allows.

The explorer never reads `ground_truth.json`; this module reads it afterwards, next to
what the run recorded:

* **exploration precision** per iteration: the fraction of the iteration's stored
  downloads whose source metadata puts them in a target class;
* **relevant policy mass** per iteration: the policy's probability on WordNet concepts in
  the lexicographer files that hold the target's kinds of things (animals, plants, foods),
  read from the per-iteration mass the explorer logs by lexname;
* the base rates a uniform explorer would get: the web's relevant share, and the
  vocabulary's share of relevant concepts.
"""
import json
import os
import urllib.parse

from ie_jax.web import shards

# The target classes (animal, plant, food and drink subgroups) are kinds of these.
RELEVANT_LEXNAMES = ('noun.animal', 'noun.plant', 'noun.food')


def load_ground_truth(world: dict) -> dict:
  with open(world['ground_truth'], encoding='utf-8') as f:
    return json.load(f)


def is_relevant(truth: dict, url: str, corpus_dir: str) -> bool:
  """Whether the corpus image behind a file:// URL is in a target class."""
  path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
  rel = os.path.relpath(path, os.path.realpath(corpus_dir))
  entry = truth['images'].get(rel)
  return bool(entry) and entry['subgroup'] in truth['classes']


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


def relevant_mass(history: list) -> dict[int, float]:
  """iteration -> policy probability on RELEVANT_LEXNAMES concepts, where logged."""
  return {h['iteration']: sum(h['policy_lexname_mass'].get(k, 0.0) for k in RELEVANT_LEXNAMES)
          for h in history if 'policy_lexname_mass' in h}


def base_rates(truth: dict, vocab) -> dict:
  images = truth['images'].values()
  web = sum(e['subgroup'] in truth['classes'] for e in images) / max(len(images), 1)
  out = {'web_relevant_share': web}
  if vocab.lexnames:
    out['vocab_relevant_share'] = sum(l in RELEVANT_LEXNAMES for l in vocab.lexnames) / len(
        vocab.lexnames)
  return out


def score(workdir: str, world: dict, history: list, vocab) -> dict:
  truth = load_ground_truth(world)
  precision = precision_by_iteration(workdir, world, truth)
  mass = relevant_mass(history)
  return {'precision': {str(k): v for k, v in precision.items()},
          'relevant_mass': {str(k): v for k, v in mass.items()},
          **base_rates(truth, vocab)}
