"""The explore loop (paper Algorithm 1): `run(config, workdir)`.

Each iteration runs the phases below, one method each, in the order of `Explorer.PHASES`.
Every phase ends in a checkpoint, so a killed run resumes at the phase it was in (inside
'train', at the last mid-phase checkpoint). Several processes (docs/SCALING.md) run this
same code in step through `self.comm` (`utils/collectives.py`): process 0 samples the
queries, each process downloads its share, rewards and training are sharded over all
devices, every process makes the same updates, and only process 0 writes side files, logs
and the report.
"""
import logging
import os
import time

import numpy as np

from ie_jax import report, reward, train
from ie_jax.concepts import policy, query_scores, sampling
from ie_jax.data import pipeline
from ie_jax.explore import caption_book, search, setup
from ie_jax.utils import atomic, failpoints, seeds
from ie_jax.web import store as store_lib

log = logging.getLogger(__name__)


class Explorer:
  """The loop: `setup.build`'s parts, and one method per phase, which changes only
  `self.state`, `self.carried` and the train state."""

  # One iteration, in this order (paper Algorithm 1; the rewards use the encoder from
  # before the iteration's training). Each phase ends in a checkpoint.
  PHASES = ('sample', 'search', 'reward', 'train', 'replay', 'update')

  def __init__(self, config, workdir: str):
    setup.build(self, config, workdir, self.PHASES)

  def sample(self) -> dict:
    """Draws the iteration's queries from the policy (process 0; the others receive them)."""
    out = self.comm.broadcast_json(self._sample() if self.primary else None)
    self.state.queries = out.pop('queries')
    failpoints.hit('sample')
    log.info('Iteration %d queries: %s', self.state.iteration,
             ', '.join(q for _, q in self.state.queries[:12]))
    return out

  def _sample(self) -> dict:
    searched = None  # redraws allowed: descriptors vary a repeated concept's query
    if not (self.policy_config.redraw_searched or self.descriptors is not None):
      searched = policy.Searched.by_text(self.vocab.lemmas, self.carried.searched)
    observed = self.state.policy_observations(len(self.vocab))
    probs = policy.distribution(self.embeddings, observed, self.policy_config,
                                searched=searched, images=caption_book.load(self.carried))
    seed = seeds.stream(self.config.seed, 'queries', self.state.iteration)
    drawn = sampling.sample_queries(
        probs, self.config.search.queries_per_iteration, mode=self.policy_config.mode,
        num_labels=len(self.target.class_names), seed=seed,
        replace=self.config.concepts.sample_with_replacement,
        groups=None if searched is None else searched.queries)
    # Kept for scoring and plots: where the policy looked, concept by concept.
    atomic.write(os.path.join(self.workdir, 'policy', f'iteration-{self.state.iteration:05d}.npy'),
                 lambda f: np.save(f, probs.astype(np.float32)))
    queries = sampling.query_list(drawn, self.vocab.lemmas, self.target.class_names,
                                  descriptors=self.descriptors, seed=seed)
    return {'queries': queries, **sampling.distribution_summary(probs, self.vocab)}

  def search(self) -> dict:
    """Searches every query and stores what downloads (`search.run`)."""
    counts = search.run(
        self.state.iteration, self.state.queries, self.engine, self.store,
        dedup=self.caches.dedup, url_cache=self.caches.urls, web_config=self.config.web,
        images_per_query=self.config.search.images_per_query,
        extra_file_roots=(self.world['corpus'],) if self.world else (), comm=self.comm)
    return {'download_' + k: v for k, v in counts.items()}

  def reward(self) -> dict:
    """Every stored image's reward: mean cosine to its k nearest target images."""
    it = self.state.iteration
    num = self.store.num_images(it) if it in self.store.iterations() else 0
    if num == 0:
      log.warning('Iteration %d stored no usable images: no rewards, no training on new '
                  'data; the policy is unchanged.', it)
      self.carried.rewards = np.zeros((0,), np.float32)
      return {'candidates': 0}
    kwargs = dict(image_size=self.config.moco.image_size,
                  batch_size=self.config.reward.embed_batch_size)
    embed = lambda images: self.embed_fn(self.train_state, images)
    targets = reward.embed_images(self.target.source, embed, self.mesh, desc='embed target',
                                  **kwargs)
    cands = reward.embed_images(store_lib.RecordSource(self.store, [(it, i) for i in range(num)]),
                                embed, self.mesh, desc='embed candidates', **kwargs)
    failpoints.hit('reward')
    rewards = self.carried.rewards = self.knn_reward(cands, targets)
    kept = rewards[self.store.kept_indices(it)]  # less the search's excluded duplicates
    monitored = self.monitor.after_reward(it, self.store, rewards, targets, embed, kwargs)
    stats = {'reward_mean': np.mean, 'reward_median': np.median, 'reward_max': np.max}
    return {**monitored, 'candidates': len(kept),
            **{k: float(f(kept)) if len(kept) else float('nan') for k, f in stats.items()}}

  def train(self) -> dict:
    """MoCo v3 on the new images plus PCR times as many replay and target images."""
    it, replay = self.state.iteration, self.config.replay
    epochs = self.config.train.epochs_per_iteration
    source = pipeline.iteration_mixture(
        store_lib.RecordSource(self.store, [(it, i) for i in self.store.kept_indices(it)]),
        store_lib.RecordSource(self.store, self.carried.replay), self.target.source, replay.pcr,
        replay.fraction, seeds.stream(self.config.seed, 'mixture', it))
    steps = pipeline.steps_per_pass(len(source), epochs, self.config.train.batch_size)
    if steps == 0:
      log.warning('Iteration %d: %d images are less than one batch; not training.', it,
                  len(source))
      return {'train_steps': 0}
    data, skipped = pipeline.from_config(self.config, source, epochs=epochs,
                                         seed=seeds.stream(self.config.seed, 'train', it))
    batches = iter(data)
    if self.state.data_iter is not None:
      # One iterator state per process (a single dict from runs saved before 2026-12-07).
      saved = self.state.data_iter
      batches.set_state(saved[self.comm.index] if isinstance(saved, list) else saved)
    losses, first = [], int(self.train_state.step) - self.state.train_steps_done

    def on_log(done, metrics):
      losses.append(float(metrics['loss']))
      self.writer.write_scalars(first + done, metrics)

    def save(done, train_state):
      self.train_state, self.state.train_steps_done = train_state, done
      self.state.data_iter = self.comm.allgather_json(batches.get_state())
      self.save()
      failpoints.hit('train')

    self.train_state, _ = train.fit(
        self.train_state, self.step_fn, batches, self.mesh, self.rng,
        start=self.state.train_steps_done, steps=steps, log_every=self.config.log_every_steps,
        on_log=on_log, checkpoint_every=self.config.checkpoint_every_steps,
        on_checkpoint=save, desc=f'train {it}')
    self.state.data_iter, self.state.train_steps_done = None, 0
    return {'train_steps': steps, 'ssl_loss': float(np.mean(losses)) if losses else np.nan,
            'skipped_records': skipped.skipped}

  def replay(self) -> dict:
    """The top `replay.keep` of the new images by reward join the replay buffer."""
    it, order = self.state.iteration, self.store.kept_indices(self.state.iteration)
    keep = int(np.floor(self.config.replay.keep * len(order)))
    # Ties broken by content (`candidates` order), not by download order.
    best = order[np.sort(np.argsort(-self.carried.rewards[order], kind='stable')[:keep])]
    added = np.stack([np.full(len(best), it), best], 1)
    self.carried.replay = replay = np.concatenate([self.carried.replay, added])
    failpoints.hit('replay')  # the new file exists, the checkpoint naming it does not
    return {'replay_added': len(added), 'replay_size': len(replay)}

  def update(self) -> dict:
    """Scores every drawn concept by its query's image rewards; the GP's new observations."""
    it, rewards, book = self.state.iteration, self.carried.rewards, self.carried.reward_book
    rows = self.store.manifest(it) if it in self.store.iterations() else []
    kept = self.store.kept(it)
    drawn = sorted({int(c) for c, _ in self.state.queries if int(c) >= 0})
    results, added = reward.query_results(rows, {r['index'] for r in kept}, rewards, book,
                                          drawn, self.config.search.images_per_query)
    concepts, scores = query_scores.score_queries(results, self.scoring)
    obs = self.state.policy_observations(len(self.vocab)).add(concepts, scores)
    self.state.observations = obs.to_state()
    if added:
      self.carried.reward_book = book
    if self.policy_config.gp_points == 'captions':
      caption_book.add(self.carried, kept, rewards, self.caption_embedder(),
                       self.policy_config.max_captions)
    self.carried.searched = np.union1d(self.carried.searched, drawn)
    failpoints.hit('update')
    scored = [(s, self.vocab.lemmas[c]) for c, s in zip(concepts, scores) if np.isfinite(s)]
    return {'concepts_scored': len(scored), 'queries_without_new_images': sum(
        1 for r in results if not r.new.size), 'observations': len(obs.concepts),
            'best_concepts': [q for _, q in sorted(scored, reverse=True)[:10]]}

  # The loop.

  def run(self) -> None:
    """Runs to `config.explore.iterations`; a full disk or a spent engine quota stops it
    with resume advice (`setup.stopping`)."""
    with setup.stopping(self):
      if self.state.saves == 0:
        setup.finetune_once(self)  # the paper's start: SSL on the target
        self.save()  # the starting point, before any phase
      while self.state.iteration < self.config.explore.iterations:
        start = time.perf_counter()
        summary = getattr(self, self.state.phase)()
        done = self.state.record(self.PHASES, summary, time.perf_counter() - start)
        if done:  # the iteration's last phase
          setup.log_iteration(self.writer, done)
          if self.primary:
            report.build(self.workdir, self.state.history)
        self.save()
    setup.close(self)

  def save(self) -> None:
    """Checkpoint: side files first, then the state that names them (`state.py`), then
    pruning."""
    self.state.saves += 1
    self.writer.flush()  # metrics up to a checkpoint survive a crash after it
    self.caches.save(self.carried)
    self.ckpt.save(self.state.saves, self.train_state,
                   {'explorer': self.state.to_meta(), 'config': self.config.to_dict()})
    self.side.prune(self.state)


def run(config, workdir: str) -> Explorer:
  """Runs (or resumes) exploration in `workdir` until `config.explore.iterations`."""
  explorer = Explorer(config, workdir)
  explorer.run()
  return explorer
