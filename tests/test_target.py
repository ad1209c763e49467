"""Targets: TFDS (mocked), folders and the generated set; errors name what was expected."""
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ie_jax.data import pipeline, target


def cfg(name, data_dir='', num_examples=0):
  return ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, split='train',
                                        num_examples=num_examples, image_size=32))


def test_flowers_trains_on_train_plus_validation_with_label_names():
  with tfds.testing.mock_data(num_examples=6):
    train = target.load(cfg('oxford_flowers102'))
    test = target.load(cfg('oxford_flowers102'), 'test')
    assert len(train.source) == 12 and len(test.source) == 6
    assert len(train.class_names) == 102 and train.class_names[0] == 'pink primrose'
    image = train.source[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    labels = train.labels()
    assert labels.shape == (12,) and labels.max() < 102
    assert pipeline.decode(image) is image


def test_food_uses_validation_as_test_and_voc_is_multi_label():
  with tfds.testing.mock_data(num_examples=4):
    assert target.load(cfg('food101'), 'test').source is not None
    voc = target.load(cfg('voc2007'), 'test')
    assert voc.multi_label and len(voc.class_names) == 20
    labels = voc.labels()
    assert labels.shape == (4, 20) and set(np.unique(labels)) <= {0, 1}
    assert labels.sum(axis=1).min() >= 1


def test_num_examples_caps_the_split():
  with tfds.testing.mock_data(num_examples=10):
    t = target.load(cfg('oxford_iiit_pet', num_examples=3))
    assert len(t.source) == 3 and t.labels().shape == (3,)
    with pytest.raises(IndexError):
      t.source[3]


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(target.TargetError, match='tfds build oxford_iiit_pet'):
    target.load(cfg('oxford_iiit_pet', data_dir=str(tmp_path)))


def test_unknown_target_lists_the_valid_ones():
  with pytest.raises(target.TargetError, match=r"Unknown target 'flowers'.*oxford_flowers102"):
    target.load(cfg('flowers'))


def write_image(path, value):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new('RGB', (10, 8), (value, 0, 0)).save(path)


def test_folder_target_from_class_folders_and_from_a_list(tmp_path):
  write_image(tmp_path / 'train' / 'sparrow' / 'a.jpg', 10)
  write_image(tmp_path / 'train' / 'sparrow' / 'b.png', 20)
  write_image(tmp_path / 'train' / 'albatross' / 'c.jpg', 30)
  (tmp_path / 'train' / 'albatross' / 'notes.txt').write_text('not an image')
  t = target.load(cfg('folder', str(tmp_path)))
  assert t.class_names == ['albatross', 'sparrow']
  assert t.labels().tolist() == [0, 1, 1]
  assert pipeline.decode(t.source[0]).shape == (8, 10, 3)

  write_image(tmp_path / 'img' / 'x.jpg', 40)
  (tmp_path / 'test.txt').write_text('img/x.jpg 7\n\nimg/x.jpg 3\n')
  t = target.load(cfg('folder', str(tmp_path)), 'test')
  assert t.class_names == ['3', '7'] and t.labels().tolist() == [1, 0]


def test_folder_without_images_fails_naming_the_expectation(tmp_path):
  (tmp_path / 'train' / 'empty').mkdir(parents=True)
  with pytest.raises(target.TargetError, match='has no images'):
    target.load(cfg('folder', str(tmp_path)))
  with pytest.raises(target.TargetError, match='found neither'):
    target.load(cfg('folder', str(tmp_path)), 'test')
  with pytest.raises(target.TargetError, match='needs --config.target.data_dir'):
    target.load(cfg('folder'))
