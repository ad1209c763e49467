"""The official MoCo v3 checkpoint converter, on a random PyTorch ResNet-50 written to disk."""
import io
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ie_jax import optim, train
from ie_jax.models import convert, moco, torch_pickle

# The PyTorch reference: the `torch` extra (CI installs it).
torch = pytest.importorskip('torch')
from ie_jax.testing import torch_moco  # pylint: disable=g-import-not-at-top,wrong-import-position


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope='module')
def official_r50(tmp_path_factory):
  """A randomly initialised full-size MoCo v3 ResNet-50, saved like r-50-100ep.pth.tar."""
  torch.manual_seed(0)
  ref = torch_moco.MoCoV3(depth=50)
  with torch.no_grad():  # non-trivial BN state, so eval features depend on loading it
    for mod in ref.modules():
      if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
        mod.running_mean.copy_(0.1 * torch.randn_like(mod.running_mean))
        mod.running_var.copy_(0.5 + torch.rand_like(mod.running_var))
        if mod.affine:
          mod.weight.copy_(0.5 + 0.5 * torch.rand_like(mod.weight))
    for p in ref.momentum_encoder.parameters():
      p.add_(0.01 * torch.randn_like(p))
  path = tmp_path_factory.mktemp('ckpt') / 'r-50-100ep.pth.tar'
  torch_moco.save_official_checkpoint(ref, path)
  return ref.eval(), path


def test_converted_resnet50_gives_pytorch_features(official_r50):
  ref, path = official_r50
  model = moco.MoCoV3()  # the paper's ResNet-50, 256 / 4096
  tx = optim.lars(0.7, 1e-6, 0.9, 1e-3)
  state = jax.eval_shape(lambda: train.create_train_state(jax.random.key(0), model, tx, 64))
  state = convert.load_official(path, state, tx)
  x = np.random.RandomState(0).randn(2, 3, 64, 64).astype(np.float32)
  nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
  with torch.no_grad():
    feats_ref = ref.features(torch.from_numpy(x)).numpy()
    q_ref = ref.predictor(ref.base_encoder(torch.from_numpy(x))).numpy()
    k_ref = ref.momentum_encoder(torch.from_numpy(x)).numpy()
  online = {'params': state.params, 'batch_stats': state.batch_stats}
  feats = model.apply(online, nhwc, method=moco.MoCoV3.features)
  assert rel_err(feats, feats_ref) < 1e-4
  assert rel_err(model.apply(online, nhwc, train=False), q_ref) < 1e-4
  k = model.apply({'params': state.momentum_params, 'batch_stats': state.momentum_batch_stats},
                  nhwc, False, method=moco.MoCoV3.target)
  assert rel_err(k, k_ref) < 1e-4
  assert int(state.step) == 0


def test_reader_matches_torch_load(official_r50):
  _, path = official_r50
  ours = torch_pickle.load(path)
  theirs = torch.load(path, weights_only=True)
  assert ours['epoch'] == 100 and ours['arch'] == 'resnet50'
  assert list(ours['state_dict']) == list(theirs['state_dict'])
  for key, value in theirs['state_dict'].items():
    np.testing.assert_array_equal(ours['state_dict'][key], value.numpy(), err_msg=key)


def test_other_architecture_fails_naming_the_parameter(official_r50):
  _, path = official_r50
  model = moco.MoCoV3(depth=18)
  tx = optim.lars(0.7, 1e-6, 0.9, 1e-3)
  state = jax.eval_shape(lambda: train.create_train_state(jax.random.key(0), model, tx, 64))
  with pytest.raises(convert.CheckpointMismatchError, match=r'encoder/layer1_0/\w+/\w+ expects'):
    convert.load_official(path, state, tx)


def test_checkpoint_without_momentum_encoder_is_rejected(official_r50):
  _, path = official_r50
  sd = {k: v for k, v in torch_pickle.load(path)['state_dict'].items()
        if 'momentum_encoder' not in k}
  model = moco.MoCoV3()
  state = jax.eval_shape(lambda: train.create_train_state(
      jax.random.key(0), model, optim.lars(0.7, 1e-6, 0.9, 1e-3), 64))
  with pytest.raises(convert.CheckpointMismatchError, match=r"no tensor 'module\.momentum_encoder\."):
    convert.convert_state_dict(sd, state)


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_reader_refuses_code_and_non_checkpoints(tmp_path):
  bad = tmp_path / 'evil.pth'
  with zipfile.ZipFile(bad, 'w') as z:
    z.writestr('evil/data.pkl', pickle.dumps({'state_dict': _Evil()}, protocol=2))
  with pytest.raises(torch_pickle.TorchPickleError, match='refusing to unpickle'):
    torch_pickle.load(bad)
  text = tmp_path / 'notes.pth'
  text.write_text('hello')
  with pytest.raises(torch_pickle.TorchPickleError, match='not a PyTorch checkpoint'):
    torch_pickle.load(text)
