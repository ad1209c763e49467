"""The concept side of a run, built from its config: the vocabulary and the GP's inputs
(`load_concepts`), the policy's settings (`policy_config`, derived from `config.concepts`)
and the query scoring rule (`query_scoring`, from `config.reward`).

Shared by the explore loop (`explorer.py`), the policy replays (`worlds/replay.py`),
the diagnosis (`worlds/diagnose.py`) and the benchmarks, so that each builds the same
policy from the same config.
"""
import logging

import numpy as np

from ie_jax.concepts import policy, query_scores, text_embed, vocab as vocab_lib

log = logging.getLogger(__name__)

# The modes that search class names (and prune the vocabulary around them).
LABEL_MODES = tuple(mode for mode, share in policy.LABEL_FRACTION.items() if share > 0)
GP_INPUTS = ('text', 'text+query', 'captions')


def load_concepts(config, world, class_names=()):
  """(vocabulary, the GP's input per concept: its text embedding [N, 384], or with
  `gp_input='text+query'` that and its query's embedding [N, 768], unit norm).

  In the label-set modes the vocabulary is pruned to the concepts closest to the class
  names (paper §3.2), for every such mode, the random ones included.
  """
  name = config.concepts.vocab
  if name == 'wordnet':
    vocab = vocab_lib.load_vocabulary().common(config.concepts.min_lemma_count)
  elif name == 'world':
    if world is None:
      raise ValueError("config.concepts.vocab='world' needs config.world to be set.")
    vocab = vocab_lib.load_tsv(world['vocab'])
  else:
    vocab = vocab_lib.load_tsv(name)
  if config.concepts.gp_input not in GP_INPUTS:
    raise ValueError(f"config.concepts.gp_input must be one of {GP_INPUTS}, not "
                     f'{config.concepts.gp_input!r}.')
  embedder = text_embed.TextEmbedder(
      text_embed.resolve_model_dir(config.concepts.text_model or None))
  label_mode = config.concepts.mode in LABEL_MODES
  # The sense texts feed the GP, or the label-set pruning; the caption GP alone needs only
  # the queries (embedding 16,816 sense texts takes minutes on a fresh CPU machine).
  embeddings = None
  if config.concepts.gp_input != 'captions' or label_mode:
    embeddings = text_embed.embed_cached(vocab.texts, embedder)
  if label_mode:
    if not class_names:
      raise ValueError(f'Mode {config.concepts.mode!r} needs a target with class names.')
    texts = [f'{name} ({config.concepts.label_category}).' for name in class_names]
    keep = policy.prune_vocabulary(embeddings, text_embed.embed_cached(texts, embedder),
                                   fraction=config.concepts.prune_fraction)
    log.info('Label-set mode: the vocabulary is pruned to %d of %d concepts.', len(keep),
             len(vocab))
    vocab, embeddings = vocab.subset(keep), embeddings[keep]
  if config.concepts.gp_input == 'text+query':
    # The engine is searched with the lemma, so two senses of one word get the same
    # results; the query's own embedding beside the sense's lets the GP see that.
    queries = text_embed.embed_cached(vocab.lemmas, embedder)
    embeddings = np.concatenate([embeddings, queries], axis=1) / np.sqrt(2.0)
  elif config.concepts.gp_input == 'captions':
    # The GP is fitted to downloaded images' captions and predicts at the query text.
    embeddings = text_embed.embed_cached(vocab.lemmas, embedder)
  return vocab, embeddings


def caption_embedder(config):
  """The text model that embeds downloaded images' captions for `gp_input='captions'`
  (the one that embeds the concepts' queries), or None."""
  if config.concepts.gp_input != 'captions':
    return None
  model_dir = text_embed.resolve_model_dir(config.concepts.text_model or None)
  return text_embed.TextEmbedder(model_dir)


def policy_config(config) -> policy.PolicyConfig:
  c = config.concepts
  return policy.PolicyConfig(
      mode=c.mode, smr=c.smr, tier_bounds=tuple(c.tier_bounds),
      tier_masses=tuple(c.tier_masses), length_scale=c.gp_length_scale, alpha=c.gp_alpha,
      normalize_y=c.gp_normalize_y, replace=c.sample_with_replacement,
      redraw_searched=c.redraw_searched,
      gp_points='captions' if c.gp_input == 'captions' else 'concepts',
      max_captions=c.gp_max_captions)


def query_scoring(config) -> query_scores.QueryScoring:
  r = config.reward
  return query_scores.QueryScoring(top_k=r.top_images, min_images=r.min_images,
                                   rule=r.query_scoring)
