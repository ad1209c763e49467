"""A registered TFDS builder that generates a tiny image dataset locally: what the paper
targets' builders are (oxford_flowers102 ...), without their downloads. In a package, as
TFDS resolves a registered builder's `code_path` through its package."""
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

CLASSES = ('daisy', 'rose', 'tulip')


class TinyFlowers(tfds.core.GeneratorBasedBuilder):
  """Three classes of 16x16 noise, 12 training and 6 test images."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    # PNG bytes in, so preparing needs no TensorFlow to encode them.
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
        'label': tfds.features.ClassLabel(names=list(CLASSES))}))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {'train': self._generate_examples(0, 12), 'test': self._generate_examples(1, 6)}

  def _generate_examples(self, seed, n):
    rng = np.random.RandomState(seed)
    for i in range(n):
      buf = io.BytesIO()
      Image.fromarray(rng.randint(0, 256, (16, 16, 3), np.uint8)).save(buf, 'PNG')
      yield i, {'image': buf.getvalue(), 'label': i % len(CLASSES)}
