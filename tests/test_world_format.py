"""World directories: any world is explored as it is, and no builder ever deletes or
overwrites a directory it did not build."""
import json
import os

import numpy as np
import pytest

from configs import demo, tiny
from ie_jax import worlds
from ie_jax.explore import setup as explore_setup
from ie_jax.worlds import demo_world, scoring, world_format


def fill_with_user_files(directory) -> dict:
  """A directory of someone's own data, including a ground truth and a world-like stamp."""
  files = {'ground_truth.json': '{"classes": [], "images": {}}', 'notes.txt': 'mine',
           'links/a.txt': 'also mine', 'corpus/captions.jsonl': '{"file": "x.png"}\n'}
  for rel, text in files.items():
    os.makedirs(os.path.dirname(os.path.join(directory, rel)), exist_ok=True)
    with open(os.path.join(directory, rel), 'w', encoding='utf-8') as f:
      f.write(text)
  return files


def assert_untouched(directory, files) -> None:
  for rel, text in files.items():
    with open(os.path.join(directory, rel), encoding='utf-8') as f:
      assert f.read() == text, rel
  found = {os.path.relpath(os.path.join(root, n), directory)
           for root, _, names in os.walk(directory) for n in names}
  assert found == set(files)


@pytest.mark.parametrize('config_module,world', [(demo, 'demo'), (tiny, 'shapes')])
def test_world_dir_full_of_files_is_left_alone_with_a_clear_error(tmp_path, config_module,
                                                                  world):
  mine = tmp_path / 'my-data'
  files = fill_with_user_files(mine)
  config = config_module.get_config()
  config.world_dir = str(mine)
  with pytest.raises(world_format.WorldError) as error:
    explore_setup.load_world(config, str(tmp_path / 'run'))
  message = str(error.value)
  assert str(mine) in message and 'did not build' in message
  assert 'ground_truth.json' in message  # what was found there
  assert "--config.world=''" in message  # how to explore it as it is
  assert_untouched(mine, files)
  assert not os.path.exists(str(mine) + '.partial')


def test_a_foreign_world_and_a_foreign_staging_directory_are_refused(tmp_path):
  other = tmp_path / 'world'
  other.mkdir()
  (other / 'world.json').write_text(json.dumps({'name': 'demo', 'version': 2,
                                                'builder': 'someone.else'}))
  with pytest.raises(world_format.WorldError, match="a world 'demo' that"):
    worlds.build('demo', str(other))
  assert os.listdir(other) == ['world.json']
  staging = tmp_path / 'fresh.partial'
  staging.mkdir()
  (staging / 'thesis.tex').write_text('mine')
  with pytest.raises(world_format.WorldError, match='not an unfinished ie-jax build'):
    worlds.build('demo', str(tmp_path / 'fresh'))
  assert (staging / 'thesis.tex').read_text() == 'mine'


def test_an_older_world_of_the_same_builder_may_be_rebuilt(tmp_path):
  legacy = {'version': 1, 'name': 'demo', 'web_images': 1, 'web_relevant': 0, 'styles': {},
            'target': {}}
  assert world_format.built_by(legacy, demo_world.BUILDER)
  assert not world_format.built_by({**legacy, 'extra': 1}, demo_world.BUILDER)
  (tmp_path / 'world.json').write_text(json.dumps(legacy))
  world_format.check_buildable(str(tmp_path), demo_world.BUILDER)  # no error
  world_format.check_buildable(str(tmp_path / 'missing'), demo_world.BUILDER)


def make_world(directory, *, name='handmade') -> None:
  """A world built by hand, in the documented layout: no ie-jax builder involved."""
  os.makedirs(os.path.join(directory, 'corpus', 'images'))
  truth = {'classes': ['cat'], 'images': {}}
  with open(os.path.join(directory, 'corpus', 'captions.jsonl'), 'w') as f:
    for i, caption in enumerate(['a cat', 'a dog', 'a cat sleeping']):
      rel = f'images/{i}.png'
      open(os.path.join(directory, 'corpus', rel), 'wb').close()
      f.write(json.dumps({'file': rel, 'caption': caption}) + '\n')
      truth['images'][rel] = {'class': 'cat' if 'cat' in caption else '', 'kind': 'photo'}
  with open(os.path.join(directory, 'ground_truth.json'), 'w') as f:
    json.dump(truth, f)
  with open(os.path.join(directory, 'world.json'), 'w') as f:
    json.dump({'format': world_format.FORMAT, 'name': name, 'version': 1}, f)


def test_a_handmade_world_opens_as_it_is(tmp_path):
  make_world(tmp_path / 'w')
  world = world_format.open_world(str(tmp_path / 'w'), need_ground_truth=True)
  assert world.name == 'handmade' and 'ground_truth' in world.paths()
  corpus = os.path.realpath(world.corpus)
  urls = [f'file://{corpus}/images/{i}.png' for i in range(3)]
  assert world_format.relevant_rows(world, urls).tolist() == [True, False, True]
  truth = scoring.load_ground_truth(world.paths())
  assert scoring.is_relevant(truth, urls[2], world.corpus)


def test_open_world_says_what_is_missing(tmp_path):
  (tmp_path / 'x.txt').write_text('x')
  with pytest.raises(world_format.WorldError, match='no world.json.*x.txt'):
    world_format.open_world(str(tmp_path))
  make_world(tmp_path / 'w')
  os.remove(tmp_path / 'w' / 'ground_truth.json')
  with pytest.raises(world_format.WorldError, match='no ground_truth.json'):
    world_format.open_world(str(tmp_path / 'w'), need_ground_truth=True)


def test_relevant_mass_comes_from_the_saved_distributions(tmp_path):
  os.makedirs(tmp_path / 'policy')
  for it, probs in enumerate([[0.25] * 4, [0.7, 0.1, 0.1, 0.1]]):
    np.save(tmp_path / 'policy' / f'iteration-{it:05d}.npy', np.asarray(probs, np.float32))
  mass = scoring.policy_mass(str(tmp_path), np.asarray([True, False, False, False]))
  assert mass == pytest.approx({0: 0.25, 1: 0.7})
