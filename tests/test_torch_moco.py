"""Tests of the PyTorch MoCo v3 reference in ie_jax.testing.torch_moco."""

import numpy as np
import pytest

# The PyTorch reference: the `torch` extra (CI installs it).
torch = pytest.importorskip('torch')
from ie_jax.testing import torch_moco  # pylint: disable=g-import-not-at-top,wrong-import-position


def _num_params(module):
  return sum(p.numel() for p in module.parameters())


def test_resnet_param_counts_match_torchvision():
  r50 = torch_moco.resnet(50)
  assert torch_moco.feature_dim(r50) == 2048
  assert r50.num_features == 2048
  # torchvision resnet50: 25,557,032 minus the 2048x1000 fc and its bias.
  assert _num_params(r50) == 25_557_032 - 2_049_000 == 23_508_032
  r18 = torch_moco.resnet(18)
  assert r18.num_features == 512
  assert _num_params(r18) == 11_176_512


def test_resnet50_state_dict_layout_and_zero_init():
  r50 = torch_moco.resnet(50)
  sd = r50.state_dict()
  for key in ['conv1.weight', 'bn1.running_mean', 'layer1.0.downsample.0.weight',
              'layer1.0.downsample.1.running_var', 'layer4.2.bn3.weight',
              'layer3.5.conv2.weight']:
    assert key in sd, key
  assert 'layer1.1.downsample.0.weight' not in sd
  assert sd['conv1.weight'].shape == (64, 3, 7, 7)
  # v1.5: the stride is on the 3x3 conv.
  assert r50.layer2[0].conv2.stride == (2, 2)
  assert r50.layer2[0].conv1.stride == (1, 1)
  for i, n in enumerate([3, 4, 6, 3]):
    for j in range(n):
      assert torch.all(sd[f'layer{i + 1}.{j}.bn3.weight'] == 0)
      assert torch.all(sd[f'layer{i + 1}.{j}.bn2.weight'] == 1)
  r18 = torch_moco.resnet(18, width=8, small_stem=True)
  assert torch.all(r18.layer4[1].bn2.weight == 0)
  assert isinstance(r18.maxpool, torch.nn.Identity)
  assert r18(torch.randn(2, 3, 16, 16)).shape == (2, 64)


def test_build_mlp_layout():
  mlp = torch_moco.build_mlp(2, 8, 16, 4)
  keys = set(mlp.state_dict())
  assert {'0.weight', '1.weight', '1.running_mean', '3.weight',
          '4.running_var'} <= keys
  assert '4.weight' not in keys and '0.bias' not in keys
  assert len(torch_moco.build_mlp(2, 8, 16, 4, last_bn=False)) == 4


def _tiny_moco():
  torch.manual_seed(0)
  return torch_moco.MoCoV3(depth=18, width=8, small_stem=True, dim=16,
                           mlp_dim=32, T=0.2)


def test_moco_forward_momentum_update_and_grads():
  model = _tiny_moco()
  base = dict(model.base_encoder.named_parameters())
  mom = dict(model.momentum_encoder.named_parameters())
  # Make the two encoders differ so the EMA check is meaningful.
  with torch.no_grad():
    for p in base.values():
      p.add_(0.1 * torch.randn_like(p))
  name = 'layer1.0.conv1.weight'
  base_before = {k: v.detach().clone() for k, v in base.items()}
  mom_old = mom[name].detach().clone()
  x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)

  loss = model(x1, x2, 0.5)
  assert loss.ndim == 0 and torch.isfinite(loss)
  torch.testing.assert_close(mom[name], 0.5 * mom_old + 0.5 * base[name])
  for k, v in base.items():
    assert torch.equal(v, base_before[k]), k

  loss.backward()
  assert all(p.grad is not None for p in model.base_encoder.parameters())
  assert all(p.grad is not None for p in model.predictor.parameters())
  assert all(p.grad is None for p in model.momentum_encoder.parameters())
  assert model.features(x1).shape == (4, 64)


def test_contrastive_loss_value():
  model = _tiny_moco()
  q, k = torch.randn(5, 16), torch.randn(5, 16)
  qn = q / q.norm(dim=1, keepdim=True)
  kn = k / k.norm(dim=1, keepdim=True)
  logits = (qn @ kn.T).numpy() / 0.2
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  expected = -np.mean(np.diag(logp)) * 2 * 0.2
  np.testing.assert_allclose(model.contrastive_loss(q, k).item(), expected,
                             rtol=1e-5)


def test_lars_matches_numpy():
  w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
  b = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
  frozen = torch.nn.Parameter(torch.ones(3))
  lr, wd, mom, tc = 0.5, 0.1, 0.9, 0.01
  opt = torch_moco.LARS([w, b, frozen], lr=lr, weight_decay=wd, momentum=mom,
                        trust_coefficient=tc)
  grads = [(np.array([[0.1, 0.2], [-0.3, 0.4]]), np.array([1.0, -2.0])),
           (np.array([[-0.5, 0.1], [0.2, 0.0]]), np.array([0.3, 0.7]))]
  nw, nb = w.detach().numpy().astype(np.float64), b.detach().numpy().copy()
  mw, mb = np.zeros_like(nw), np.zeros_like(nb)
  for gw, gb in grads:
    w.grad = torch.tensor(gw, dtype=torch.float32)
    b.grad = torch.tensor(gb, dtype=torch.float32)
    opt.step()
    dw = gw + wd * nw
    dw = dw * (tc * np.linalg.norm(nw) / np.linalg.norm(dw))
    mw, mb = mom * mw + dw, mom * mb + gb
    nw, nb = nw - lr * mw, nb - lr * mb
    np.testing.assert_allclose(w.detach().numpy(), nw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.detach().numpy(), nb, rtol=1e-5, atol=1e-7)
  assert torch.equal(frozen, torch.ones(3))
  assert frozen not in opt.state or not opt.state[frozen]


def test_save_official_checkpoint(tmp_path):
  model = _tiny_moco()
  path = tmp_path / 'ckpt.pth.tar'
  torch_moco.save_official_checkpoint(model, path, epoch=7)
  ckpt = torch.load(path, map_location='cpu', weights_only=False)
  assert set(ckpt) == {'epoch', 'arch', 'state_dict'}
  assert ckpt['epoch'] == 7 and ckpt['arch'] == 'resnet18'
  sd = ckpt['state_dict']
  prefixes = ('module.base_encoder.', 'module.momentum_encoder.',
              'module.predictor.')
  assert all(k.startswith(prefixes) for k in sd)
  assert 'module.base_encoder.fc.4.running_mean' in sd
  assert 'module.base_encoder.fc.4.weight' not in sd
  assert 'module.predictor.3.weight' in sd
  assert len(sd) == len(model.state_dict())
