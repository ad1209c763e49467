"""A slice of the real demo world, fetched by the real npm from the registry at pinned
versions and checksums, explored for one iteration, probed and scored.

The slice is the emoji catalogue, one small web set (Streamline, ~0.4 MB) and the Fluent
target, whose own style is in the web too: about 8 MB from npm, kept in the test cache
between runs.
"""
import json
import os

import pytest

from configs import demo
from ie_jax import session
from ie_jax.utils import checkpoint


@pytest.mark.slow
def test_slice_builds_and_one_iteration_explores_probes_and_scores(tmp_path):
  config = demo.get_config('iterations=1')
  config.world = 'demo-slice'
  config.world_dir = str(tmp_path / 'world')
  config.concepts.min_lemma_count = 50   # 221 everyday WordNet senses: quick to embed
  config.concepts.tier_bounds = (10, 40)
  config.model.width = 8
  config.model.dim = 32
  config.model.mlp_dim = 64
  config.train.batch_size = 16
  config.search.queries_per_iteration = 6
  config.search.images_per_query = 8
  config.reward.min_images = 2
  config.init.finetune_epochs = 1
  workdir = str(tmp_path / 'run')

  summary = session.run(config, workdir)

  stamp = json.load(open(tmp_path / 'world' / 'world.json'))
  assert stamp['name'] == 'demo-slice' and stamp['styles']['streamline']['images'] > 300
  assert stamp['target']['train'] > 80 and stamp['target']['test'] > 80
  # The target's own style is in the web (Design B revised), without the target images.
  assert stamp['styles']['fluent_flat']['images'] > 1000 and stamp['target']['web_only'] > 80
  assert 'MIT' in (tmp_path / 'world' / 'NOTICE').read_text()
  world = summary['world']
  stored = world['precision']['0']['stored']
  assert 0 < stored <= 6 * 8
  assert 0.0 <= world['precision']['0']['precision'] <= 1.0
  assert 0.0 < world['web_relevant_share'] < 1.0
  assert set(world['relevant_mass']) == {'0'}
  assert 0.0 < summary['probe']['knn'] <= 1.0 and 0.0 < summary['probe']['linear'] <= 1.0
  for name in ('index.html', 'precision.png', 'relevant_mass.png', 'summary.json'):
    assert os.path.getsize(os.path.join(workdir, 'report', name)) > 0
  page = open(os.path.join(workdir, 'report', 'index.html'), encoding='utf-8').read()
  assert 'ground truth' in page and 'Linear probe' in page
  # The folder target was resolved to the world's own, in the run's saved config (which
  # probes read), without changing the config the caller passed.
  saved = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                  read_only=True).restore_meta()['config']
  assert saved['target']['data_dir'] == os.path.join(str(tmp_path / 'world'), 'target')
  assert not config.target.data_dir
