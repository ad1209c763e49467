"""The README's own-corpus recipe, run as written on a corpus and target the test makes.

The commands are read from README.md, placeholders filled in; for speed the test appends
overrides (one iteration of a few queries, no fine-tune or probe, a 12-concept vocabulary
instead of WordNet's 16,816). The recipe must explore the user's corpus for the user's
target, and must neither build nor score against the demo world.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from ie_jax.data import shapes
from ie_jax.web import shards
from ie_jax.worlds import shapes_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['--config.explore.iterations=1', '--config.init.finetune_epochs=0',
        '--config.evaluate.final_probe=False', '--config.search.queries_per_iteration=4',
        '--config.search.images_per_query=8', '--config.train.batch_size=16']


def recipe() -> list[str]:
  """The shell commands of the README's own-corpus recipe."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  section = text[text.index('**Your own images, offline.**'):]
  block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  return [line for line in block.replace('\\\n', ' ').splitlines() if line.strip()]


def make_target(directory, per_class: int = 12) -> None:
  images, labels = shapes.generate(2 * per_class * len(shapes.CLASSES), 40, seed=5)
  counts = {}
  for image, label in zip(images, labels):
    name = shapes.CLASSES[label]
    i = counts[name] = counts.get(name, 0) + 1
    split = 'train' if i % 2 else 'test'
    os.makedirs(os.path.join(directory, split, name), exist_ok=True)
    Image.fromarray(image).save(os.path.join(directory, split, name, f'{i:03d}.png'))


@pytest.mark.slow
def test_the_own_corpus_recipe_runs_as_written(tmp_path, launcher_env):
  world = shapes_world.build(str(tmp_path / 'generated'))  # someone's captioned images
  corpus, target = world['corpus'], str(tmp_path / 'target')
  make_target(target)
  vocab = world['vocab']  # a small vocabulary, only for speed
  commands = recipe()
  assert len(commands) == 2 and 'launch.py' in commands[1]
  fill = {'CORPUS_DIR': corpus, 'TARGET_DIR': target, 'runs/mine': str(tmp_path / 'run')}
  for i, command in enumerate(commands):
    for key, value in fill.items():
      command = command.replace(key, value)
    args = shlex.split(command)
    assert args[0] == 'python'
    args[0] = sys.executable
    if 'launch.py' in command:
      args += FAST + [f'--config.concepts.vocab={vocab}']
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=launcher_env)
    assert proc.returncode == 0, (i, proc.stderr[-4000:])
  run = tmp_path / 'run'
  assert not (run / 'world').exists()  # no demo world was built
  summary = json.load(open(run / 'report' / 'summary.json'))
  assert 'world' not in summary  # nothing scored against a ground truth it does not have
  stored = [r for r in shards.open_run_store(str(run)).manifest(0) if r['status'] == 'ok']
  assert stored and all(os.path.realpath(corpus) in r['url'] for r in stored)
  saved = np.load(run / 'policy' / 'iteration-00000.npy')
  assert saved.shape == (12,)
