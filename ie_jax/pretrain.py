"""Plain MoCo v3 training on the target set: the paper's initial target fine-tune.

`run(config, workdir)` trains for `config.train.epochs` over the target, checkpoints every
`config.checkpoint_every_steps`, and resumes from the latest checkpoint in `workdir`. The
data iterator's state is saved with each checkpoint and the device augmentation is keyed by
the step, so a resumed run continues exactly where the killed one stopped.
"""
import logging
import os
import time

import jax

from ie_jax import optim, train
from ie_jax.data import photometric, pipeline, target
from ie_jax.models import convert, imagenet_start, moco
from ie_jax.utils import checkpoint, metric_writer, seeds, sharding

log = logging.getLogger(__name__)


def build(config, mesh, total_steps: int):
  """Model, optimizer, schedules and a fresh (or converted) replicated TrainState."""
  model = moco.build(config.model)
  tx, learning_rate = optim.build(config.optim, config.train.batch_size, total_steps)
  ema_momentum = optim.ema_momentum(config.moco, total_steps)
  state = train.create_train_state(jax.random.key(config.seed), model, tx,
                                   config.moco.image_size)
  if config.init_checkpoint:
    # A ResNet starts from the official MoCo v3 checkpoint; EfficientNet-Lite0 from an
    # ImageNet classifier's backbone.
    if config.model.backbone == 'resnet':
      state = convert.load_official(config.init_checkpoint, state, tx)
    else:
      state = imagenet_start.load(config.init_checkpoint, state, tx)
    log.info('Initialised from %s.', config.init_checkpoint)
  else:
    log.warning('config.init_checkpoint is empty: training from scratch. The paper starts '
                    'from the official MoCo v3 ResNet-50 (r-50-100ep.pth.tar).')
  state = jax.device_put(state, sharding.replicated(mesh))
  step_fn = train.make_train_step(
      mesh, model=model, tx=tx, learning_rate=learning_rate, ema_momentum=ema_momentum,
      temperature=config.moco.temperature, augment=photometric.moco_v3_views)
  return model, state, step_fn


def run(config, workdir: str):
  """Trains MoCo v3 on the target set; returns the final TrainState."""
  mesh = sharding.make_mesh()
  images = target.load(config.target).source
  batch_size = config.train.batch_size
  if len(images) < batch_size:
    raise ValueError(f'The target has {len(images)} images, fewer than one batch '
                     f'(config.train.batch_size={batch_size}).')
  if batch_size % mesh.devices.size:
    raise ValueError(f'config.train.batch_size={batch_size} does not divide over '
                     f'{mesh.devices.size} devices.')
  total_steps = pipeline.steps_per_pass(len(images), config.train.epochs, batch_size)
  log.info('MoCo v3 on target %r: %d images, batch %d, %d steps on %d devices.',
           config.target.name, len(images), batch_size, total_steps, mesh.devices.size)

  _, state, step_fn = build(config, mesh, total_steps)
  data, skipped = pipeline.from_config(config, images, epochs=config.train.epochs,
                                       seed=seeds.stream(config.seed, 'target_pretrain'))
  batches = iter(data)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                 max_to_keep=config.checkpoints_to_keep)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    batches.set_state(meta['data_iter'])
    log.info('Resumed from step %d.', int(state.step))
  start = int(state.step)
  writer = metric_writer.MetricWriter(os.path.join(workdir, 'logs'))
  last_log = [time.perf_counter(), start]

  def on_log(done, metrics):
    now = time.perf_counter()
    metrics['images_per_s'] = (done - last_log[1]) * batch_size / (now - last_log[0])
    metrics['skipped_records'] = skipped.skipped
    last_log[:] = [now, done]
    writer.write_scalars(done, metrics)
    log.info('step %d/%d: %s', done, total_steps,
             ', '.join(f'{k}={v:.4g}' for k, v in metrics.items()))

  def save(done, state):
    ckpt.save(done, state, {'config': config.to_dict(), 'data_iter': batches.get_state()})

  state, done = train.fit(state, step_fn, batches, mesh, jax.random.key(config.seed),
                          start=start, steps=total_steps, log_every=config.log_every_steps,
                          on_log=on_log, checkpoint_every=config.checkpoint_every_steps,
                          on_checkpoint=save)
  if done > start and ckpt.latest_step() != done:
    save(done, state)
  writer.close()
  ckpt.close()
  return state
