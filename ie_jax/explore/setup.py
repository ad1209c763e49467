"""Builds what the explore loop runs on, from the config: world, target, engine, train
state, caches and logs (the concept side: `concepts/from_config.py`), and how a run starts
and stops. Kept apart from `loop.py` so the loop reads like the paper.
"""
import contextlib
import io
import logging
import os

import jax
import numpy as np
from PIL import Image

from ie_jax import pretrain, reward, train, warmup, worlds
from ie_jax.concepts import from_config
from ie_jax.data import pipeline, target as target_lib
from ie_jax.explore import monitor, search, state as state_lib
from ie_jax.utils import (checkpoint, collectives, disk, distributed, metric_writer as
                          metric_writer_lib, seeds, sharding)
from ie_jax.web import dedup as dedup_lib
from ie_jax.web import engines, openverse, shards, validate
from ie_jax.worlds import world_format

log = logging.getLogger(__name__)


def build(explorer, config, workdir: str, phases: tuple) -> None:
  """Gives `explorer` what its phases use, resumed from the latest checkpoint if any.

  Attributes set: config (with the world's target resolved), workdir, mesh, comm (the
  collectives), primary, world, target, vocab, embeddings (the concepts' GP inputs),
  store, side (side files), model, train_state, step_fn, ckpt, embed_fn, knn_reward,
  monitor, writer, rng, state, carried (`state.Carried`: the side files as typed fields),
  caches, engine, policy_config, scoring, descriptors,
  caption_embedder (a function: the captions' text model on process 0, else None).
  """
  e = explorer
  e.workdir, e.mesh, e.comm = workdir, sharding.make_mesh(), collectives.current()
  e.primary = e.comm.primary
  distributed.check_same_config(config.to_dict())
  distributed.check_batch(config.train.batch_size)
  # Process 0 builds the world and fills the shared caches; the others then only read.
  if not e.primary:
    e.comm.barrier('setup')
  e.world = load_world(config, workdir)
  config = e.config = with_world_target(config, e.world)
  e.target = load_target(config)
  e.vocab, e.embeddings = from_config.load_concepts(config, e.world, e.target.class_names)
  if e.primary:
    e.comm.barrier('setup')
  if os.path.isdir(os.path.join(workdir, 'web')) and shards.shard_count(workdir) != e.comm.count:
    raise distributed.DistributedError(
        f'{workdir} was explored by {shards.shard_count(workdir)} process(es); resume it '
        f'with that many, not {e.comm.count} (each owns a shard of the downloads).')
  e.store = shards.ShardedStore(workdir, e.comm.index, e.comm.count)
  e.store.remove_uncommitted()
  e.side = state_lib.SideFiles(workdir, write=e.primary)
  e.model, e.train_state, e.step_fn, e.ckpt = train_parts(config, e.mesh, workdir)
  e.embed_fn = train.make_embed_step(e.mesh, model=e.model)
  # Built once: a fresh jit per iteration would recompile every time.
  e.knn_reward = reward.make_knn_reward(e.mesh, k=config.reward.k)
  e.monitor = monitor.Monitor(config, e.target, e.mesh, workdir, e.primary)
  e.writer = metric_writer(workdir)
  e.rng = jax.random.key(config.seed)
  e.state = state_lib.ExplorerState()
  if e.ckpt.latest_step() is not None:
    e.train_state, meta = e.ckpt.restore(e.train_state)
    e.state = state_lib.ExplorerState.from_meta(meta['explorer'], phases)
    log.info('Resumed at iteration %d, phase %r.', e.state.iteration, e.state.phase)
  e.carried = state_lib.Carried(e.side, e.state)
  move_exclusions(e.side, e.state, e.store, e.primary)
  e.caches = Caches(e.carried, e.target, config)
  e.engine = make_engine(config, e.world, e.caches.queries)
  e.policy_config = from_config.policy_config(config)
  e.scoring = from_config.query_scoring(config)
  e.descriptors = descriptor_sampler(config)
  # Loaded on first use, by the one process that samples. (Not a closure over `explorer`:
  # a reference cycle would keep a discarded explorer's open files until a GC pass.)
  e.caption_embedder = _lazy(from_config.caption_embedder, config) if e.primary else (
      lambda: None)


def _lazy(make, *args):
  made = []

  def get():
    if not made:
      made.append(make(*args))
    return made[0]
  return get


def finetune_once(explorer) -> None:
  """Before the first phase of a new run: the target fine-tune, if configured."""
  if explorer.config.init.finetune_epochs > 0:
    explorer.train_state, losses = finetune(
        explorer.config, explorer.train_state, explorer.step_fn, explorer.mesh,
        explorer.target.source, explorer.rng)
    explorer.state.current['finetune_losses'] = losses


def close(explorer) -> None:
  explorer.writer.close()
  explorer.ckpt.close()
  explorer.store.close()  # its readers reopen on demand, e.g. for a probe after the run


@contextlib.contextmanager
def stopping(explorer):
  """Stops the loop cleanly where the run cannot go on: on a spent engine quota (with a
  checkpoint, so the run resumes in that search phase) or a full disk (with advice)."""
  try:
    yield
  except search.QuotaStop:
    # A resumed run searches this iteration again, with the queries that did get answers
    # served from the saved query cache.
    explorer.save()
    explorer.writer.close()
    explorer.ckpt.close()
    raise
  except (OSError, RuntimeError, ValueError) as e:
    if not disk.is_disk_full(e):
      raise
    during = f'iteration {explorer.state.iteration}, phase {explorer.state.phase!r}'
    error = disk.stopped(e, path=explorer.workdir, during=during,
                         checkpoint_dir=explorer.ckpt.directory,
                         step=explorer.ckpt.latest_step())
    for close_fn in (explorer.writer.close, explorer.ckpt.close):
      try:
        close_fn()
      except (OSError, RuntimeError, ValueError):
        pass  # flushing logs can fail on the same full disk; the error says why
    raise error from e


def load_world(config, workdir: str) -> dict | None:
  """The world the run explores, with its search index; None without one.

  `config.world` names a builder: the world is built into `config.world_dir` (default
  WORKDIR/world), which must be new, empty or an earlier build of the same builder. With
  `config.world` empty, a `config.world_dir` is explored as it is (any directory in the
  layout of `worlds/world_format.py`). Nothing here deletes or overwrites data it did not
  write; a directory that is not what the config says raises `WorldError` saying why.
  """
  from ie_jax.web import local_index  # pylint: disable=g-import-not-at-top
  if config.world:
    directory = config.world_dir or os.path.join(workdir, 'world')
    worlds.build(config.world, directory)
  elif config.world_dir:
    directory = config.world_dir
  else:
    return None
  paths = world_format.open_world(directory).paths()
  try:
    local_index.load(paths['index'], corpus_dir=paths['corpus'])
  except local_index.LocalIndexError as e:  # missing, partial or stale: (re)build it
    if os.path.exists(paths['index']) and not os.path.exists(
        os.path.join(paths['index'], local_index.MANIFEST)):
      raise world_format.WorldError(
          f'{paths["index"]} is not a search index ie-jax wrote ({e}); move it away and '
          'the index is built there.') from e
    local_index.build(paths['corpus'], paths['index'],
                      model_dir=config.concepts.text_model or None, progress=True)
  return paths


def with_world_target(config, world):
  """`config`, or where its 'folder' target has no data_dir and the run has a world, a
  copy whose target is the world's own; the given config is never changed.

  The world's directory is only known once the workdir is, so the config cannot name it.
  The explorer runs on the resolved copy and saves it with its checkpoints, so probes of
  the run find the target too.
  """
  if world and 'target' in world and config.target.name == 'folder' and \
      not config.target.data_dir:
    config = config.copy_and_resolve_references()
    config.target.data_dir = world['target']
  return config


def load_target(config) -> target_lib.Target:
  target = target_lib.load(config.target, 'train')
  if len(target.source) < config.reward.k:
    raise target_lib.TargetError(
        f'The target has {len(target.source)} training images, fewer than the '
        f'k={config.reward.k} neighbours of the reward.')
  return target


def descriptor_sampler(config):
  """The "Ours++" descriptor LM, or None. Needs the torch extra."""
  if not config.concepts.descriptor_model:
    return None
  from ie_jax.concepts import descriptors  # pylint: disable=g-import-not-at-top
  return descriptors.DescriptorSampler.from_pretrained(config.concepts.descriptor_model)


def make_engine(config, world, query_cache: engines.QueryCache):
  """The configured search engine behind the persistent query cache."""
  web = config.web
  if web.engine == 'local':
    from ie_jax.web import local  # pylint: disable=g-import-not-at-top
    index = web.local_index or (world or {}).get('index')
    if not index:
      raise ValueError("config.web.engine='local' needs config.web.local_index or a "
                       'config.world.')
    engine = local.LocalEngine(index, model_dir=config.concepts.text_model or None)
  elif web.engine == 'url_corpus':
    from ie_jax.web import url_corpus  # pylint: disable=g-import-not-at-top
    if not web.url_index:
      raise ValueError("config.web.engine='url_corpus' needs config.web.url_index: an index "
                       'built with python -m ie_jax.web.url_corpus index TABLE --out DIR.')
    engine = url_corpus.UrlCorpusEngine(web.url_index,
                                        model_dir=config.concepts.text_model or None)
  else:
    kwargs = {'base_url': web.engine_url} if web.engine_url else {}
    engine = engines.make(web.engine, **kwargs)
    if web.engine == 'openverse':
      openverse.warn_if_anonymous(config.search.queries_per_iteration,
                                  config.search.images_per_query)
  return engines.CachedEngine(engine, query_cache)


def train_parts(config, mesh, workdir: str):
  """(model, TrainState, jitted step, Checkpointer); schedules must not need a length.

  The TrainState is the run's starting encoder: `config.init_checkpoint`, then the web
  warm-up if `init.warmup_epochs` > 0 (`ie_jax.warmup`), run only before the first
  explorer checkpoint: a resumed run restores its state from that instead.
  """
  if 'cosine' in (config.optim.schedule, config.moco.momentum_schedule):
    raise ValueError('Exploration has no fixed length: use constant lr and momentum '
                     "schedules (the paper's), not 'cosine'.")
  model, state, step_fn = pretrain.build(config, mesh, total_steps=0)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                 max_to_keep=config.checkpoints_to_keep)
  if config.init.warmup_epochs > 0 and ckpt.latest_step() is None:
    state = warmup.run(config, state, step_fn, mesh, warmup.directory(workdir),
                       warmup_index(config, workdir))
  return model, state, step_fn, ckpt


def warmup_index(config, workdir: str) -> str:
  """The local index whose corpus the warm-up samples: the configured one, or the world's."""
  world = config.world_dir or os.path.join(workdir, 'world')  # as `load_world`
  index = config.web.local_index or (os.path.join(world, 'index') if config.world else '')
  if not index:
    raise ValueError('init.warmup_epochs > 0 needs a local web corpus: set '
                     'config.web.local_index or config.world.')
  return index


def metric_writer(workdir: str):
  return metric_writer_lib.MetricWriter(os.path.join(workdir, 'logs'))


def log_iteration(writer, done: dict) -> None:
  """Logs a finished iteration's summary (an entry of `ExplorerState.history`)."""
  iteration = done['iteration']
  summary = {k: v for k, v in done.items() if k != 'iteration'}
  scalars = {k: v for k, v in summary.items()
             if isinstance(v, (int, float)) and np.isfinite(v)}
  writer.write_scalars(iteration, {f'explore/{k}': v for k, v in scalars.items()})
  texts = {k: ', '.join(map(str, v)) for k, v in summary.items() if isinstance(v, list)}
  writer.write_texts(iteration, {f'explore/{k}': v for k, v in texts.items()})
  writer.flush()
  log.info('Iteration %d: %s', iteration,
           '; '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                     for k, v in summary.items()))


class Caches:
  """The web caches that persist across iterations: dedup hashes, URLs, queries."""

  def __init__(self, carried, target, config):
    self.dedup = dedup_lib.DedupIndex.from_state(carried.dedup) \
        if carried.saved('dedup') else self._fresh_dedup(target, config)
    if carried.saved('forbidden_thumbs'):  # the test-leak guard's pictures
      self.dedup.set_forbidden_thumbs(carried.forbidden_thumbs)
    self.urls = dedup_lib.UrlCache.from_state(carried.urls) \
        if carried.saved('urls') else dedup_lib.UrlCache()
    self.queries = engines.QueryCache.from_state(carried.queries) \
        if carried.saved('queries') else engines.QueryCache()
    self._saved_sizes = None

  @staticmethod
  def _fresh_dedup(target, config) -> dedup_lib.DedupIndex:
    # Leakage prevention (paper Table 4 measured it): no downloaded image may match a
    # target *test* image.
    dedup = dedup_lib.DedupIndex()
    try:
      test = target_lib.load(config.target, 'test').source
    except target_lib.TargetError as e:
      log.warning('No target test split to guard against leaks: %s', e)
      return dedup
    limits = validate.ImageLimits(min_side=1, short_side=config.web.max_side)
    for i in range(len(test)):
      image = test[i]
      if isinstance(image, np.ndarray):
        buf = io.BytesIO()
        Image.fromarray(pipeline.decode(image)).save(buf, 'PNG')
        image = buf.getvalue()
      dedup.forbid_image(image, limits)
    log.info('Forbidding %d target test images from downloads.', len(test))
    return dedup

  def save(self, carried) -> None:
    """Writes the caches when they changed since the last save (they only grow)."""
    if not carried.saved('forbidden_thumbs'):  # written once: they never change
      carried.forbidden_thumbs = self.dedup.forbidden_thumbs()
    sizes = (len(self.dedup), len(self.urls), len(self.queries))
    if sizes == self._saved_sizes and all(carried.saved(f) for f in ('dedup', 'urls',
                                                                      'queries')):
      return
    carried.dedup = self.dedup.state()
    carried.urls = self.urls.state()
    carried.queries = self.queries.state()
    self._saved_sizes = sizes


def move_exclusions(side, state, store, write: bool) -> None:
  """Runs saved before 2026-12-07 kept a multi-process search's dropped duplicates in a
  side file, [(iteration, index)]; the store records them now (`ShardedStore.exclude`)."""
  if 'excluded' not in state.files:
    return
  refs = side.load_array(state, 'excluded', np.zeros((0, 2), np.int64))
  for it in sorted({int(t) for t, _ in refs}):
    store.exclude(it, {int(i): ['duplicate', 'decided by an earlier version']
                       for t, i in refs if t == it}, write=write)
  del state.files['excluded']  # pruned at the next save


def finetune(config, train_state, step_fn, mesh, source, rng):
  """The paper's starting point: SSL fine-tuning on the target, early-stopped on the loss.

  Runs `config.init.finetune_epochs` epochs of MoCo v3 over the target and returns the
  state after the epoch with the lowest mean SSL loss (no labels are used), with the
  per-epoch losses.
  """
  best, best_loss, losses = None, np.inf, []
  steps = pipeline.steps_per_pass(len(source), 1, config.train.batch_size)
  for epoch in range(config.init.finetune_epochs if steps else 0):
    data, _ = pipeline.from_config(config, source, epochs=1,
                                   seed=seeds.stream(config.seed, 'finetune', epoch))
    epoch_losses = []
    try:
      # Every step's loss comes to the host (log_every=1) for the epoch's mean: a handful
      # of scalars per epoch, and a divergence stops at its first step.
      train_state, done = train.fit(
          train_state, step_fn, iter(data), mesh, rng, start=0, steps=steps, log_every=1,
          on_log=lambda _, metrics: epoch_losses.append(float(metrics['loss'])),
          desc=f'fine-tune epoch {epoch}')
    except FloatingPointError as e:
      raise FloatingPointError(
          f'The target fine-tune diverged in epoch {epoch} (earlier epochs\' mean SSL '
          f'losses: {losses}): {e} Lower config.optim.base_lr, or set '
          'config.init.finetune_epochs to the last finite epoch.') from e
    if not done:  # every record was skipped: nothing to train on
      break
    loss = float(np.mean(epoch_losses))
    losses.append(loss)
    log.info('Fine-tune epoch %d: SSL loss %.4f', epoch, loss)
    if loss < best_loss:
      best, best_loss = jax.device_get(train_state), loss
  if best is None:
    raise ValueError('The target has fewer images than one batch: cannot fine-tune.')
  return jax.device_put(best, sharding.replicated(mesh)), losses
