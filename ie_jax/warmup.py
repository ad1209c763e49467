"""A general-purpose starting encoder where no pre-trained one can be had: the CPU demo.

The paper starts exploring from an ImageNet-pretrained MoCo v3 ResNet-50 (paper §4.1):
features learnt on a large, general image collection that was chosen without looking at
any target. A small encoder trained from scratch for CPU-minutes on the target's hundred
images has no such start; it ranks web images by colour. The warm-up is the miniature of
ImageNet pre-training: MoCo v3, with the run's own model, optimizer and augmentation, on
images drawn uniformly at random from the local engine's corpus (`init.warmup_epochs`
passes over `init.warmup_images` of them). Uniform: the draw never looks at the target,
its labels or a world's ground truth, only at the index's records. The target fine-tune
and exploration then start from it, as they would from `config.init_checkpoint`.

`run` checkpoints into WORKDIR/warmup every `checkpoint_every_steps` with the data
iterator, so a killed warm-up resumes where it stopped, and a finished one is restored,
never trained again. Like `convert.load_official`, it hands on the weights with the step
at 0 and a fresh optimizer state: a pre-training result, not a run to continue.
"""
import logging
import os
import urllib.parse

import jax
import numpy as np

from ie_jax import train
from ie_jax.data import pipeline
from ie_jax.utils import checkpoint, seeds, sharding
from ie_jax.web import corpus, local_index

log = logging.getLogger(__name__)

# A corpus image larger than this is not a web image the downloader would have kept.
_MAX_BYTES = 16 << 20


class WarmupError(ValueError):
  """The warm-up cannot run or cannot resume; the message says why."""


def read_url(url: str) -> bytes:
  """The bytes behind a local-engine URL: a file, or a member of a tar shard."""
  parts = urllib.parse.urlsplit(url)
  if parts.scheme != 'file':
    raise WarmupError(f'The warm-up reads local corpora only, not {url[:100]!r}.')
  path = urllib.parse.unquote(parts.path)
  member = urllib.parse.parse_qs(parts.query).get('member')
  if member:
    return corpus.read_tar_member(path, member[0], _MAX_BYTES)
  with open(path, 'rb') as f:
    return f.read()


class CorpusImages:
  """Random-access encoded images: the given rows of a local index, in that order."""

  def __init__(self, urls: list[str], rows: np.ndarray):
    self.urls = urls
    self.rows = np.asarray(rows, np.int64)

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> bytes:
    return read_url(self.urls[int(self.rows[i])])


def corpus_sample(index_dir: str, count: int, seed: int) -> CorpusImages:
  """`count` images of the index drawn uniformly without replacement (0: all of them)."""
  urls = local_index.load(index_dir).urls
  rng = np.random.default_rng(seed)
  if 0 < count < len(urls):
    rows = np.sort(rng.choice(len(urls), count, replace=False))
  else:
    rows = np.arange(len(urls))
  return CorpusImages(urls, rows)


def _fingerprint(config, index_dir: str) -> dict:
  """What decides the warm-up's result; a checkpoint made with other values is not reused."""
  return {'seed': config.seed, 'epochs': config.init.warmup_epochs,
          'images': config.init.warmup_images, 'batch_size': config.train.batch_size,
          'image_size': config.moco.image_size, 'model': config.model.to_dict(),
          'index': local_index.read_manifest(index_dir)['content_sha256']}


def run(config, state, step_fn, mesh, directory: str, index_dir: str):
  """Warms `state` up on the corpus of the local index at `index_dir`; returns the result.

  Args:
    config: the run's config (`explore.warmup_*`, `train.batch_size`, `moco`, `seed`).
    state: the freshly built TrainState (donated to `step_fn`).
    step_fn: the run's jitted MoCo v3 step.
    mesh: the device mesh.
    directory: where the warm-up checkpoints live (WORKDIR/warmup).
    index_dir: a local-engine index; only its records are read.

  Returns:
    The warmed-up state, with step 0 and a fresh optimizer state.
  """
  cfg = config.init
  batch_size = config.train.batch_size
  images = corpus_sample(index_dir, cfg.warmup_images, seed=config.seed)
  total = pipeline.steps_per_pass(len(images), cfg.warmup_epochs, batch_size)
  if total == 0:
    raise WarmupError(f'The warm-up sample has {len(images)} images, fewer than one batch '
                      f'of {batch_size}.')
  # The fresh optimizer state to hand on; copied to the host because `step_fn` donates.
  fresh_opt_state, fresh_step = jax.device_get((state.opt_state, state.step))
  fingerprint = _fingerprint(config, index_dir)
  data, skipped = pipeline.from_config(config, images, epochs=cfg.warmup_epochs,
                                       seed=seeds.stream(config.seed, 'warmup'))
  batches = iter(data)
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=1)
  meta = {'done': False, 'losses': []}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    if meta.get('fingerprint') != fingerprint:
      raise WarmupError(
          f'The warm-up checkpoint in {directory} was made with other settings '
          f'({meta.get("fingerprint")}, now {fingerprint}). Remove that directory to warm '
          'up again, or use another workdir.')
    if not meta['done']:
      batches.set_state(meta['data_iter'])
  start = int(state.step) - int(fresh_step)
  if meta['done']:
    log.info('Warm-up: restored the finished warm-up from %s (%d steps).', directory, start)
  else:
    log.info('Warm-up: MoCo v3 on %d web images drawn uniformly from %s, %d epochs, %d '
             'steps%s.', len(images), index_dir, cfg.warmup_epochs, total,
             f', resuming at step {start}' if start else '')
  losses = list(meta['losses'])

  def on_log(done, metrics):
    losses.append(float(metrics['loss']))
    log.info('Warm-up step %d/%d: SSL loss %.4f', done, total, losses[-1])

  def save(done, state):
    ckpt.save(done, state, {'done': False, 'losses': losses, 'fingerprint': fingerprint,
                            'data_iter': batches.get_state()})

  state, done = train.fit(state, step_fn, batches, mesh, jax.random.key(config.seed),
                          start=start, steps=start if meta['done'] else total,
                          log_every=config.log_every_steps, on_log=on_log,
                          checkpoint_every=config.checkpoint_every_steps,
                          on_checkpoint=save, desc='warm-up')
  if not meta['done']:
    # Numbered past every mid-run save: skipped records can end the data before `total`.
    ckpt.save(total + 1, state, {'done': True, 'losses': losses,
                                    'fingerprint': fingerprint, 'skipped': skipped.skipped})
    log.info('Warm-up finished: %d steps, SSL loss %.4f at the end.', done,
             losses[-1] if losses else float('nan'))
  ckpt.close()
  return state.replace(step=jax.device_put(fresh_step, sharding.replicated(mesh)),
                       opt_state=jax.device_put(fresh_opt_state, sharding.replicated(mesh)))


def directory(workdir: str) -> str:
  return os.path.join(workdir, 'warmup')
