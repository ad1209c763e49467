"""What an iteration's searches brought, as the policy sees it: the pieces of the explorer's
'sample' and 'update' phases that are bookkeeping rather than the algorithm.

* `query_results`: the store's manifest rows of an iteration -> one `QueryResult` per
  drawn concept, its new images' rewards and the stored rewards of results an earlier
  query had brought (the "reward book", keyed by a stored image's sha256);
* `distribution_summary`: what the logs and the report say about a sampling distribution.
"""
import numpy as np

from ie_jax.concepts import query_scores


def sha_key(sha256: str) -> int:
  """A stored image's key in the reward book: the first 64 bits of its sha256."""
  return int(sha256[:16], 16)


def query_results(rows: list, kept: set, rewards: np.ndarray, book: dict, drawn,
                  requested: int) -> tuple[list, dict]:
  """(one `QueryResult` per drawn concept, the book entries this iteration adds).

  Args:
    rows: the iteration's manifest rows (every job's record).
    kept: store indices of the iteration's images that count (less a multi-process
      search's duplicates).
    rewards: the iteration's image rewards, by store index.
    book: sha key -> reward of every image kept in earlier iterations; updated in place
      with this iteration's.
    drawn: the iteration's vocabulary concepts (class-name queries are never observed).
    requested: images asked of the engine per query.
  """
  added = {sha_key(r['sha256']): float(rewards[r['index']]) for r in rows
           if r['status'] == 'ok' and r['index'] in kept}
  book.update(added)
  new, old = {}, {}
  for row in rows:
    concept = int(row['concept'])
    if concept < 0:  # class names: searched and trained on, never observations
      continue
    if row['status'] == 'ok' and row['index'] in kept:
      new.setdefault(concept, []).append(float(rewards[row['index']]))
    elif row.get('sha256') and sha_key(row['sha256']) in book:
      # An image an earlier query (or process) brought: it scores this query too.
      old.setdefault(concept, []).append(book[sha_key(row['sha256'])])
  return [query_scores.QueryResult(c, requested, np.asarray(new.get(c, [])),
                                   np.asarray(old.get(c, []))) for c in drawn], added


def distribution_summary(probs: np.ndarray, vocab) -> dict:
  """Entropy, top concepts and (WordNet vocabularies) the mass per lexicographer file."""
  nz = probs[probs > 0]
  top = np.argsort(-probs)[:10]
  out = {'policy_entropy': float(-(nz * np.log(nz)).sum()),
         'top_concepts': [vocab.lemmas[i] for i in top]}
  if vocab.lexnames:  # where the policy looks, by WordNet's coarse categories
    mass = {}
    for lexname, p in zip(vocab.lexnames, probs):
      mass[lexname] = mass.get(lexname, 0.0) + float(p)
    out['policy_lexname_mass'] = {k: round(v, 6) for k, v in sorted(mass.items())}
  return out
