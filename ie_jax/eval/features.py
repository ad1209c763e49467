"""Frozen features of a checkpoint: read-only restore, extraction, and a per-step cache.

The model is rebuilt from the checkpoint's own `meta['config']`, not from the config given
to the probe, so a probe never loads weights into a model of another shape; where the two
configs disagree on the architecture, it fails and names both. Features are the online
encoder's pooled, L2-normalised output with BN in eval mode (`train.make_embed_step`), on
`augment.eval_transform` views (resize to 256/224 of the crop, centre crop).
"""
import hashlib
import json
import logging
import os

import jax
import ml_collections
import numpy as np

from ie_jax import optim, reward, train
from ie_jax.models import moco
from ie_jax.utils import atomic, checkpoint, sharding

log = logging.getLogger(__name__)

# The keys of config.model that change parameter shapes; dtype only changes the compute.
ARCHITECTURE_KEYS = ('backbone', 'depth', 'width', 'small_stem', 'dim', 'mlp_dim')
# What a checkpoint's config that predates a key meant by it.
_BEFORE_THE_KEY = {'backbone': 'resnet'}


class EvalError(ValueError):
  """Evaluation cannot run on this input; the message says what was found."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, 'checkpoints')


def open_checkpoints(workdir: str) -> checkpoint.Checkpointer:
  """A read-only Checkpointer on `workdir`, failing if it holds no checkpoint at all."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    found = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else 'no such directory'
    raise EvalError(f'No checkpoint in {workdir}: expected a checkpoints/ folder, found '
                    f'{found}.')
  return checkpoint.Checkpointer(directory, read_only=True)


def read_meta(workdir: str, step: int) -> dict:
  """The JSON `meta` item of one checkpoint, without reading its arrays.

  The state's shapes are only known from the meta's config, so it is read first.
  """
  return open_checkpoints(workdir).restore_meta(step)


def check_architecture(saved: dict, config, where: str) -> None:
  """Fails if `config.model` asks for another architecture than the checkpoint's."""
  wanted = {k: config.model[k] for k in ARCHITECTURE_KEYS}
  found = {k: saved.get(k, _BEFORE_THE_KEY.get(k)) for k in ARCHITECTURE_KEYS}
  if wanted != found:
    diff = ', '.join(f'{k}={found[k]!r} (config: {wanted[k]!r})'
                     for k in ARCHITECTURE_KEYS if wanted[k] != found[k])
    raise EvalError(f'{where} holds another architecture than the config: found {diff}.')


def resolve(workdir: str, config, step: int | None = None):
  """Picks the step and reads its saved config, checking the architecture; reads no arrays.

  Args:
    workdir: the run's directory (checkpoints in `<workdir>/checkpoints/<step>`).
    config: the probe's config; only its `model` section is compared with the checkpoint.
    step: which checkpoint; None takes the latest.

  Returns:
    (step, the checkpoint's config as a ConfigDict).
  """
  ckpt = open_checkpoints(workdir)
  try:
    steps = ckpt.all_steps()
  finally:
    ckpt.close()
  if not steps:
    raise EvalError(f'No checkpoint in {ckpt.directory}: the folder holds no saved step '
                    f'(found {sorted(os.listdir(ckpt.directory))}).')
  step = max(steps) if step is None else step
  if step not in steps:
    raise EvalError(f'No checkpoint at step {step} in {ckpt.directory}; found steps {steps}.')
  meta = read_meta(workdir, step)
  where = f'The checkpoint at step {step} in {ckpt.directory}'
  if 'config' not in meta:
    raise EvalError(f'{where} has no config in its meta (found keys {sorted(meta)}).')
  if config is not None:
    check_architecture(meta["config"]["model"], config, where)
  return step, ml_collections.ConfigDict(meta['config'])


def restore(workdir: str, saved, mesh, step: int):
  """Restores `step` read-only, replicated on `mesh` (any device count).

  Args:
    workdir: the run's directory.
    saved: the checkpoint's own config (from `resolve`), which the model is built from.
    mesh: where the restored state lives.
    step: which checkpoint.

  Returns:
    (state, model).
  """
  model = moco.build(saved.model)
  # Only the optimizer state's structure matters here, so the schedule length is moot.
  tx, _ = optim.build(saved.optim, saved.train.batch_size, total_steps=1)
  shapes = jax.eval_shape(lambda: train.create_train_state(
      jax.random.key(0), model, tx, saved.moco.image_size))
  repl = sharding.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                          shapes)
  ckpt = open_checkpoints(workdir)
  try:
    state, _ = ckpt.restore(abstract, step)
  except checkpoint.CheckpointError as e:
    raise EvalError(str(e)) from e
  finally:
    ckpt.close()
  return state, model


def extract(state, model, mesh, images, image_size: int, batch_size: int = 256,
            desc: str = 'features') -> np.ndarray:
  """Features [N, D] (float32) of a random-access image source, in order."""
  if len(images) == 0:
    raise EvalError('The image source is empty: nothing to extract features from.')
  embed = train.make_embed_step(mesh, model=model)
  return reward.embed_images(images, lambda batch: embed(state, batch), mesh,
                             image_size=image_size, batch_size=batch_size, desc=desc)


def dataset_key(target_config) -> str:
  """Names a dataset for the cache: the target's name and a hash of its whole section.

  Two configs that load different images (another data_dir, a cap on examples) never
  share a cache entry.
  """
  blob = json.dumps(target_config.to_dict(), sort_keys=True).encode()
  return f'{target_config.name}-{hashlib.sha256(blob).hexdigest()[:8]}'


def cache_path(workdir: str, step: int, split: str, target_config) -> str:
  return os.path.join(workdir, 'eval', f'features_{step}_{split}_{dataset_key(target_config)}.npz')


def cached(path: str, compute) -> tuple[np.ndarray, np.ndarray]:
  """(features, labels) from `path` if present, else from `compute()`, then saved there."""
  if os.path.isfile(path):
    with np.load(path) as data:
      log.info('Features from the cache %s.', path)
      return data['features'], data['labels']
  features, labels = compute()
  # Whole or absent: a killed probe must not leave a truncated cache entry.
  atomic.write(path, lambda f: np.savez(f, features=features, labels=labels))
  return features, labels
