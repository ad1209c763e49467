"""The explore loop (paper Algorithm 1): `run(config, workdir)`.

Each iteration runs six phases: sample queries, search and download, reward the new
images with the current encoder, train MoCo v3 on them plus replay and target images,
keep the top half in the replay buffer, and update the concept policy. Every phase ends in
a checkpoint of the TrainState plus the explorer state, so a killed run resumes at the
phase it was in (inside 'train', at the last mid-phase checkpoint).

Several processes (`jax.distributed`, docs/SCALING.md) run this same loop in step: process 0
samples the queries and broadcasts them, each process searches and downloads its share into
its own store shard, rewards and training are sharded over all devices, every process makes
the same replay and policy updates from the gathered results, checkpoints are collective,
and only process 0 writes side files, logs and the report.
"""
import logging
import os
import time

import jax
import numpy as np

from ie_jax import (caption_book, explorer_setup, explorer_state, monitor, report,
                    reward, search_phase, train)
from ie_jax.concepts import caption_gp, from_config, policy, query_scores, sampling
from ie_jax.data import pipeline
from ie_jax.utils import atomic, disk, distributed, failpoints, seeds, sharding
from ie_jax.web import shards
from ie_jax.web import store as store_lib

log = logging.getLogger(__name__)


class Explorer:
  """The loop's pieces; one method per phase, each mutating `self.state` only."""

  # One iteration: a method per phase, in this order (paper Algorithm 1; the rewards use
  # the encoder from before the iteration's training). Each ends in a checkpoint.
  PHASES = ('sample', 'search', 'reward', 'train', 'replay', 'update')

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    self.mesh = sharding.make_mesh()
    self.process, self.processes = jax.process_index(), jax.process_count()
    self.primary = self.process == 0
    distributed.check_same_config(config.to_dict())
    distributed.check_batch(config.train.batch_size)
    # Process 0 builds the world and fills the shared caches; the others then only read.
    if not self.primary:
      distributed.barrier('setup')
    self.world = explorer_setup.load_world(config, workdir)
    config = self.config = explorer_setup.with_world_target(config, self.world)
    self.target = explorer_setup.load_target(config)
    self.vocab, self.embeddings = from_config.load_concepts(config, self.world,
                                                               self.target.class_names)
    if self.primary:
      distributed.barrier('setup')
    if os.path.isdir(os.path.join(workdir, 'web')) and \
        shards.shard_count(workdir) != self.processes:
      raise distributed.DistributedError(
          f'{workdir} was explored by {shards.shard_count(workdir)} process(es); resume it '
          f'with that many, not {self.processes} (each owns a shard of the downloads).')
    self.store = shards.ShardedStore(workdir, self.process, self.processes)
    self.store.remove_uncommitted()
    self.side = explorer_state.SideFiles(workdir, write=self.primary)
    self.model, self.train_state, self.step_fn, self.ckpt = explorer_setup.train_parts(
        config, self.mesh, workdir)
    self.embed_fn = train.make_embed_step(self.mesh, model=self.model)
    # Built once: a fresh jit per iteration would recompile every time.
    self.knn_reward = reward.make_knn_reward(self.mesh, k=config.explore.reward_k)
    self.monitor = monitor.Monitor(config, self.target, self.mesh, workdir, self.primary)
    self.writer = explorer_setup.metric_writer(workdir)
    self.rng = jax.random.key(config.seed)
    self.state = explorer_state.ExplorerState()
    if self.ckpt.latest_step() is not None:
      self.train_state, meta = self.ckpt.restore(self.train_state)
      self.state = explorer_state.ExplorerState.from_meta(meta['explorer'], self.PHASES)
      log.info('Resumed at iteration %d, phase %r.', self.state.iteration, self.state.phase)
    self.caches = explorer_setup.Caches(self.side, self.state, self.target, config)
    self.engine = explorer_setup.make_engine(config, self.world, self.caches.queries)
    self.policy_config = from_config.policy_config(config)
    self.scoring = from_config.query_scoring(config)
    self.descriptors = explorer_setup.descriptor_sampler(config)
    self._caption_embedder = None  # loaded on first use (gp_input='captions')

  # Bookkeeping.

  def observations(self) -> policy.Observations:
    if self.state.observations is None:
      return policy.Observations(len(self.vocab))
    return policy.Observations.from_state(self.state.observations, len(self.vocab))

  def candidates(self, it: int) -> np.ndarray:
    """Store indices of iteration `it`'s images in a canonical (sha256) order.

    Downloads finish in a different order every run, so store order is not reproducible;
    ordering by content makes training, ties and the replay buffer independent of it.
    """
    if it not in self.store.iterations():
      return np.zeros((0,), np.int64)
    rows = self.ok_rows(it)
    return np.asarray([r['index'] for r in sorted(rows, key=lambda r: r['sha256'])], np.int64)

  def ok_rows(self, it: int) -> list[dict]:
    """Iteration `it`'s stored images, less the duplicates a multi-process search kept."""
    excluded = self.side.load_array(self.state, 'excluded', np.zeros((0, 2), np.int64))
    dropped = {int(i) for t, i in excluded if t == it}
    return [r for r in self.store.manifest(it) if r['status'] == 'ok'
            and r['index'] not in dropped]

  def searched(self) -> policy.Searched | None:
    """Concepts whose query was searched; None where redraws are allowed (descriptors
    vary a repeated concept's query)."""
    if self.policy_config.redraw_searched or self.descriptors is not None:
      return None
    done = self.side.load_array(self.state, 'searched', np.zeros((0,), np.int64))
    return policy.Searched.by_text(self.vocab.lemmas, done)

  def reward_book(self) -> dict:
    """Stored rewards of every image kept so far, by sha256 prefix (query scoring 'all')."""
    keys = self.side.load_array(self.state, 'reward_keys', np.zeros((0,), np.uint64))
    values = self.side.load_array(self.state, 'reward_values', np.zeros((0,), np.float32))
    return dict(zip(keys.tolist(), values.tolist()))

  def images(self) -> caption_gp.ImageObservations:
    """The downloaded images the 'captions' GP is fitted to (gp_input='captions')."""
    return caption_book.load(self.side, self.state)

  def replay_refs(self) -> np.ndarray:
    return self.side.load_array(self.state, 'replay', np.zeros((0, 2), np.int64))

  def save(self) -> None:
    """Checkpoint: side files first, then the state that names them, then pruning.

    The save counter is the Orbax step; it is stored in the checkpoint it numbers, so a
    resumed run's next save gets a fresh number (and fresh side-file names).
    """
    self.state.saves += 1
    self.writer.flush()  # metrics up to a checkpoint survive a crash after it
    self.caches.save(self.side, self.state)
    meta = {'explorer': self.state.to_meta(), 'config': self.config.to_dict()}
    self.ckpt.save(self.state.saves, self.train_state, meta)
    self.side.prune(self.state)

  # The phases.

  def sample(self) -> dict:
    # The GP update runs once, on process 0; every process gets its queries and summary.
    out = distributed.broadcast_json(self._sample() if self.primary else None)
    self.state.queries = out.pop('queries')
    failpoints.hit('sample')
    log.info('Iteration %d queries: %s', self.state.iteration,
             ', '.join(q for _, q in self.state.queries[:12]))
    return out

  def _sample(self) -> dict:
    cfg = self.config.explore
    searched = self.searched()
    probs = policy.distribution(self.embeddings, self.observations(), self.policy_config,
                                searched=searched, images=self.images())
    seed = seeds.stream(self.config.seed, 'queries', self.state.iteration)
    drawn = sampling.sample_queries(probs, cfg.queries_per_iteration,
                                  mode=self.policy_config.mode,
                                  num_labels=len(self.target.class_names), seed=seed,
                                  replace=self.config.concepts.sample_with_replacement,
                                  groups=None if searched is None else searched.queries)
    # Kept for scoring and plots: where the policy looked, concept by concept.
    atomic.write(
        os.path.join(self.workdir, 'policy', f'iteration-{self.state.iteration:05d}.npy'),
        lambda f: np.save(f, probs.astype(np.float32)))
    queries = sampling.query_list(drawn, self.vocab.lemmas, self.target.class_names,
                                descriptors=self.descriptors, seed=seed)
    return {'queries': queries, **sampling.distribution_summary(probs, self.vocab)}

  def search(self) -> dict:
    kwargs = dict(dedup=self.caches.dedup, url_cache=self.caches.urls,
                  web_config=self.config.web,
                  images_per_query=self.config.explore.images_per_query,
                  extra_file_roots=(self.world['corpus'],) if self.world else ())
    if self.processes == 1:
      counts = search_phase.run(self.state.iteration, self.state.queries, self.engine,
                                self.store, **kwargs)
    else:
      counts, excluded = search_phase.run_sharded(
          self.state.iteration, self.state.queries, self.engine, self.store,
          index=self.process, count=self.processes, gather=distributed.allgather_json,
          barrier=distributed.barrier, **kwargs)
      before = self.side.load_array(self.state, 'excluded', np.zeros((0, 2), np.int64))
      self.side.save_array(self.state, 'excluded', np.concatenate(
          [before, np.asarray(excluded, np.int64).reshape(-1, 2)]))
    return {'download_' + k: v for k, v in counts.items()}

  def reward(self) -> dict:
    it = self.state.iteration
    num = self.store.num_images(it) if it in self.store.iterations() else 0
    if num == 0:
      log.warning('Iteration %d stored no usable images: no rewards, no training on new '
                  'data; the policy is unchanged.', it)
      self.side.save_array(self.state, 'rewards', np.zeros((0,), np.float32))
      return {'candidates': 0}
    kwargs = dict(image_size=self.config.moco.image_size,
                  batch_size=self.config.explore.embed_batch_size)
    embed = lambda images: self.embed_fn(self.train_state, images)
    targets = reward.embed_images(self.target.source, embed, self.mesh, desc='embed target',
                                  **kwargs)
    cands = reward.embed_images(store_lib.RecordSource(self.store, [(it, i) for i in range(num)]),
                                embed, self.mesh, desc='embed candidates', **kwargs)
    failpoints.hit('reward')
    rewards = self.knn_reward(cands, targets)
    self.side.save_array(self.state, 'rewards', rewards.astype(np.float32))
    kept = rewards[self.candidates(it)]  # less a multi-process search's stored duplicates
    monitored = self.monitor.after_reward(it, self.store, rewards, targets, embed, kwargs)
    stats = {'reward_mean': np.mean, 'reward_median': np.median, 'reward_max': np.max}
    return {**monitored, 'candidates': len(kept),
            **{k: float(f(kept)) if len(kept) else float('nan') for k, f in stats.items()}}

  def train(self) -> dict:
    cfg, it = self.config.explore, self.state.iteration
    order = self.candidates(it)
    num = len(order)
    replay = self.replay_refs()
    refs = pipeline.iteration_refs(num, len(replay), len(self.target.source), cfg.pcr,
                                   cfg.replay_fraction, seed=seeds.stream(self.config.seed, 'mixture', it))
    batch = self.config.train.batch_size
    steps = pipeline.steps_per_pass(len(refs), cfg.epochs_per_iteration, batch)
    if steps == 0:
      log.warning('Iteration %d: %d images are less than one batch; not training.', it,
                  len(refs))
      return {'train_steps': 0}
    source = pipeline.MixtureSource({
        pipeline.CANDIDATES: store_lib.RecordSource(self.store, [(it, i) for i in order]),
        pipeline.REPLAY: store_lib.RecordSource(self.store, replay),
        pipeline.TARGET: self.target.source}, refs)
    data, skipped = pipeline.from_config(self.config, source, epochs=cfg.epochs_per_iteration,
                                         seed=seeds.stream(self.config.seed, 'train', it))
    batches = iter(data)
    if self.state.data_iter is not None:
      # One iterator state per process (a single dict from runs saved before 2026-12-07).
      saved = self.state.data_iter
      batches.set_state(saved[self.process] if isinstance(saved, list) else saved)
    losses = []
    first = int(self.train_state.step) - self.state.train_steps_done  # this iteration's

    def on_log(done, metrics):
      losses.append(float(metrics['loss']))
      self.writer.write_scalars(first + done, metrics)

    def save(done, state):
      self.train_state = state
      # Every process's iterator state, in process order (a list of one for one process).
      self.state.data_iter = distributed.allgather_json(batches.get_state())
      self.state.train_steps_done = done
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
    it = self.state.iteration
    rewards = self.side.load_array(self.state, 'rewards', np.zeros((0,), np.float32))
    order = self.candidates(it)  # ties broken by content, not by download order
    keep = int(np.floor(self.config.explore.replay_keep * len(order)))
    best = order[np.sort(np.argsort(-rewards[order], kind='stable')[:keep])]
    added = np.stack([np.full(len(best), it), best], 1).astype(np.int64)
    replay = np.concatenate([self.replay_refs(), added])
    self.side.save_array(self.state, 'replay', replay)
    failpoints.hit('replay')  # the new file exists, the checkpoint naming it does not
    return {'replay_added': len(added), 'replay_size': len(replay)}

  def update(self) -> dict:
    """Scores every drawn query (`query_scores.score_queries`) and adds the observations."""
    it = self.state.iteration
    rewards = self.side.load_array(self.state, 'rewards', np.zeros((0,), np.float32))
    rows = self.store.manifest(it) if it in self.store.iterations() else []
    kept = {r['index'] for r in self.ok_rows(it)}
    book = self.reward_book()
    drawn = sorted({int(c) for c, _ in self.state.queries if int(c) >= 0})
    results, added = reward.query_results(rows, kept, rewards, book, drawn,
                                                 self.config.explore.images_per_query)
    concepts, scores = query_scores.score_queries(results, self.scoring)
    obs = self.observations().add(concepts, scores)
    self.state.observations = obs.to_state()
    if added:
      self.side.save_array(self.state, 'reward_keys', np.fromiter(book, np.uint64, len(book)))
      self.side.save_array(self.state, 'reward_values',
                           np.fromiter(book.values(), np.float32, len(book)))
    if self.policy_config.gp_points == 'captions':  # only process 0 samples, and embeds
      if self.primary and self._caption_embedder is None:
        self._caption_embedder = from_config.caption_embedder(self.config)
      caption_book.add(self.side, self.state, self.ok_rows(it), rewards,
                       self._caption_embedder if self.primary else None,
                       self.policy_config.max_captions)
    done = self.side.load_array(self.state, 'searched', np.zeros((0,), np.int64))
    self.side.save_array(self.state, 'searched', np.union1d(done, drawn).astype(np.int64))
    failpoints.hit('update')
    scored = [(s, self.vocab.lemmas[c]) for c, s in zip(concepts, scores) if np.isfinite(s)]
    best = [q for _, q in sorted(scored, reverse=True)[:10]]
    return {'concepts_scored': len(scored), 'queries_without_new_images': sum(
        1 for r in results if not r.new.size), 'best_concepts': best,
            'observations': len(obs.concepts)}

  # The loop.

  def run(self) -> None:
    """Runs to `config.explore.iterations`; a full disk or a spent engine quota stops it
    with resume advice."""
    try:
      self._run()
    except search_phase.QuotaStop:
      # Checkpointed inside the search phase: a resumed run searches this iteration again,
      # with the queries that did get answers served from the saved query cache.
      self.save()
      self.writer.close()
      self.ckpt.close()
      raise
    except (OSError, RuntimeError, ValueError) as e:
      if not disk.is_disk_full(e):
        raise
      during = f'iteration {self.state.iteration}, phase {self.state.phase!r}'
      error = disk.stopped(e, path=self.workdir, during=during,
                           checkpoint_dir=self.ckpt.directory, step=self.ckpt.latest_step())
      for close in (self.writer.close, self.ckpt.close):
        try:
          close()
        except (OSError, RuntimeError, ValueError):
          pass  # flushing logs can fail on the same full disk; the error above says why
      raise error from e

  def _run(self) -> None:
    if self.state.saves == 0:
      if self.config.explore.finetune_epochs > 0:
        self.train_state, losses = explorer_setup.finetune(
            self.config, self.train_state, self.step_fn, self.mesh, self.target.source,
            self.rng)
        self.state.current['finetune_losses'] = losses
      self.save()  # the starting point, before any phase
    while self.state.iteration < self.config.explore.iterations:
      it, phase = self.state.iteration, self.state.phase
      start = time.perf_counter()
      summary = self.state.current
      summary.update(getattr(self, phase)())
      summary[f'time_{phase}_s'] = summary.get(f'time_{phase}_s', 0) + (
          time.perf_counter() - start)
      if phase == self.PHASES[-1]:
        self.state.history.append({'iteration': it, **summary})
        explorer_setup.log_iteration(self.writer, it, summary)
        if self.primary:
          report.build(self.workdir, self.state.history)
        self.state.current = {}
      self.state.advance(self.PHASES)
      self.save()
    self.writer.close()
    self.ckpt.close()
    self.store.close()  # its readers reopen on demand, e.g. for a probe after the run


def run(config, workdir: str) -> Explorer:
  """Runs (or resumes) exploration in `workdir` until `config.explore.iterations`."""
  explorer = Explorer(config, workdir)
  explorer.run()
  return explorer
