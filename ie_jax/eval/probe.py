r"""Probes checkpoints: a linear probe and a k-NN classifier on frozen features.

  python -m ie_jax.eval.probe --workdir=runs/tiny --config=configs/tiny.py [--step=8]
  python -m ie_jax.eval.probe --workdir=runs/flowers --config=configs/flowers.py --follow

Reads checkpoints read-only, so it can run beside the explorer writing them. Each probed
step writes `<workdir>/eval/probe_<step>.json`; `--follow` polls for new checkpoints, probes
each one, and appends a row per step to `<workdir>/eval/curve.csv`. Protocols: `linear.py`
(logistic regression, C chosen on 20% of the training split) and `knn.py` (k = 20, T = 0.07).
One target per workdir, as the paper runs each target separately.
"""
import csv
import json
import logging
import os
import sys
import time

from ie_jax.data import target as target_lib
from ie_jax.eval import features, knn, linear, metrics
from ie_jax.utils import atomic, sharding

log = logging.getLogger(__name__)

CURVE_FIELDS = ('step', 'target', 'metric', 'linear', 'knn')


def load_targets(target_config):
  """(train, test) Targets of `target_config`, failing clearly where a split is missing."""
  name = target_config.name
  try:
    train_set = target_lib.load(target_config, 'train')
  except target_lib.TargetError as e:
    raise features.EvalError(f'Cannot load the training split of target {name!r}: {e}') from e
  try:
    test_set = target_lib.load(target_config, 'test')
  except target_lib.TargetError as e:
    root = target_config.data_dir
    found = (f' Found in {root}: {sorted(os.listdir(root))}.' if root and os.path.isdir(root)
             else '')
    raise features.EvalError(f'Probing needs a test split, and target {name!r} has none: '
                             f'{e}{found}') from e
  if list(train_set.class_names) != list(test_set.class_names):
    only_train = sorted(set(train_set.class_names) - set(test_set.class_names))
    only_test = sorted(set(test_set.class_names) - set(train_set.class_names))
    raise features.EvalError(
        f'Target {name!r}: the train and test splits have different classes (only in train: '
        f'{only_train[:5]}, only in test: {only_test[:5]}), so labels would not line up.')
  return train_set, test_set


def probe_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, 'eval', f'probe_{step}.json')


def _check_not_other_target(path: str, name: str) -> None:
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      found = json.load(f).get('target')
    if found != name:
      raise features.EvalError(f'{path} holds a probe of target {found!r}; probing {name!r} '
                               'would overwrite it. Use one workdir per target.')


def probe(config, workdir: str, step: int | None = None, *, mesh=None,
          run_name: str | None = None, batch_size: int = 256) -> dict:
  """Probes one checkpoint (default: the latest) and writes `eval/probe_<step>.json`.

  Args:
    config: the probe's config: its `target` is probed, its `model` must match the run's.
    workdir: the run's directory.
    step: the checkpoint step; None takes the latest.
    mesh: where features are computed (default: all devices).
    run_name: the row name in results tables (default: the workdir's name).
    batch_size: images per feature-extraction step, over all devices.

  Returns:
    The dict written to the JSON file.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  train_set, test_set = load_targets(config.target)
  step, saved = features.resolve(workdir, config, step)
  out_path = probe_path(workdir, step)
  _check_not_other_target(out_path, config.target.name)
  restored = []

  def compute(dataset, split):
    def run():
      if not restored:  # only when some split is not cached yet
        restored.append(features.restore(workdir, saved, mesh, step))
      state, model = restored[0]
      feats = features.extract(state, model, mesh, dataset.source, saved.moco.image_size,
                               batch_size, desc=f'step {step} {split}')
      return feats, dataset.labels()
    return run

  train_x, train_y = features.cached(
      features.cache_path(workdir, step, 'train', config.target), compute(train_set, 'train'))
  test_x, test_y = features.cached(
      features.cache_path(workdir, step, 'test', config.target), compute(test_set, 'test'))
  multi = train_set.multi_label
  num_classes = len(train_set.class_names)

  linear_result = linear.probe(train_x, train_y, test_x, test_y, multi_label=multi)
  knn_fn = knn.make_knn(mesh)
  knn_scores, _ = knn_fn(train_x, knn.one_hot(train_y, num_classes), test_x)
  knn_result = {'value': metrics.score(test_y, knn_scores, multi), 'k': knn.K,
                'temperature': knn.TEMPERATURE}
  if not multi:
    knn_result['mean_per_class_accuracy'] = metrics.mean_per_class_accuracy(test_y, knn_scores)

  result = {
      'run_name': run_name or os.path.basename(os.path.normpath(workdir)),
      'step': int(step),
      'target': config.target.name,
      'dataset': features.dataset_key(config.target),
      'metric': linear_result['metric'],
      'multi_label': bool(multi),
      'num_train': int(len(train_x)),
      'num_test': int(len(test_x)),
      'feature_dim': int(train_x.shape[1]),
      'model': saved.model.to_dict(),
      'linear': linear_result,
      'knn': knn_result,
  }
  atomic.write(out_path, lambda f: f.write(json.dumps(result, indent=2).encode()))
  log.info('Step %d on %s: linear %s %.4f (C=%g), k-NN %.4f.', step, config.target.name,
           result['metric'], linear_result['value'], linear_result['C'], knn_result['value'])
  return result


def curve_path(workdir: str) -> str:
  return os.path.join(workdir, 'eval', 'curve.csv')


def curve_steps(workdir: str, target_name: str) -> set:
  """Steps of `target_name` already in the curve."""
  path = curve_path(workdir)
  if not os.path.isfile(path):
    return set()
  with open(path, newline='', encoding='utf-8') as f:
    return {int(row['step']) for row in csv.DictReader(f) if row['target'] == target_name}


def _append_curve(workdir: str, result: dict) -> None:
  path = curve_path(workdir)
  new = not os.path.isfile(path)
  with open(path, 'a', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
    if new:
      writer.writeheader()
    writer.writerow({'step': result['step'], 'target': result['target'],
                     'metric': result['metric'], 'linear': result['linear']['value'],
                     'knn': result['knn']['value']})


def _saved_steps(workdir: str) -> list:
  try:
    ckpt = features.open_checkpoints(workdir)
  except features.EvalError:
    return []  # the explorer has not written its first checkpoint yet
  try:
    return ckpt.all_steps()  # reloads: the explorer may have saved since the last poll
  finally:
    ckpt.close()


def follow(config, workdir: str, *, poll_seconds: float = 60.0, max_polls: int = 0,
           sleep=time.sleep, **probe_kwargs) -> list:
  """Probes every checkpoint not yet in `eval/curve.csv`, oldest first, then polls for more.

  Args:
    config, workdir: as for `probe`.
    poll_seconds: the wait between polls.
    max_polls: stop after this many polls (0: never; for tests and batch jobs).
    sleep: the waiting function (tests pass a fake).
    **probe_kwargs: passed on to `probe`.

  Returns:
    The results probed by this call, in order.
  """
  done = curve_steps(workdir, config.target.name)
  results, polls = [], 0
  while True:
    for step in sorted(set(_saved_steps(workdir)) - done):
      try:
        result = probe(config, workdir, step, **probe_kwargs)
      except features.EvalError:
        # The explorer keeps only its last few checkpoints and may delete this one while
        # we read it; any other failure is real.
        if step in _saved_steps(workdir):
          raise
        log.warning('Checkpoint %d was deleted before it was probed; skipping it.', step)
        continue
      _append_curve(workdir, result)
      done.add(step)
      results.append(result)
    polls += 1
    if max_polls and polls >= max_polls:
      return results
    log.info('Probed steps %s; next poll in %gs.', sorted(done), poll_seconds)
    sleep(poll_seconds)


def main(argv):
  # Imported here so that library users and tests never parse flags.
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  flag_values = flags.FLAGS
  if not flag_values['verbosity'].present:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file at INFO
  logging.getLogger('ie_jax').setLevel(logging.INFO)
  config = flag_values.config
  kwargs = {'run_name': flag_values.run_name or None, 'batch_size': flag_values.batch_size}
  try:
    if flag_values.follow:
      follow(config, flag_values.workdir, poll_seconds=flag_values.poll_seconds,
             max_polls=flag_values.max_polls, **kwargs)
      return
    step = None if flag_values.step < 0 else flag_values.step
    result = probe(config, flag_values.workdir, step, **kwargs)
  except features.EvalError as e:
    sys.exit(f'error: {e}')  # the message says what was found; a traceback adds nothing
  print(json.dumps({k: result[k] for k in ('run_name', 'step', 'target', 'metric')}
                   | {'linear': result['linear']['value'], 'knn': result['knn']['value']}))


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file (its target is probed).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The run directory holding checkpoints/.')
  flags.DEFINE_integer('step', -1, 'Checkpoint step to probe (-1: the latest).')
  flags.DEFINE_bool('follow', False, 'Poll for new checkpoints and probe each one.')
  flags.DEFINE_float('poll_seconds', 60.0, 'Wait between polls in --follow mode.')
  flags.DEFINE_integer('max_polls', 0, 'Stop --follow after this many polls (0: never).')
  flags.DEFINE_string('run_name', '', 'Row name in results tables (default: workdir name).')
  flags.DEFINE_integer('batch_size', 256, 'Images per feature-extraction step.')
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
