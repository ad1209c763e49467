"""PyTorch reference of MoCo v3 for ResNets, written from the paper's algorithm.

This module exists so that the JAX implementation can be checked against an
independent implementation (numerical parity, checkpoint layout) and so that
benchmarks have a baseline. Module and parameter names follow torchvision's
ResNet layout and the official MoCo v3 checkpoint layout, so that state dicts
produced here have exactly the keys a real `r-50-100ep.pth.tar` has.
"""

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or projected) shortcut."""

  expansion = 1

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

  def last_bn(self):
    return self.bn2

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 block; the stride sits on the 3x3 conv (ResNet v1.5)."""

  expansion = 4

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

  def last_bn(self):
    return self.bn3

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


def _shortcut(in_planes, out_planes, stride):
  """Projection shortcut, needed only when the block changes the shape."""
  if stride == 1 and in_planes == out_planes:
    return None
  return nn.Sequential(
      nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
      nn.BatchNorm2d(out_planes))


_CONFIGS = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}


class ResNet(nn.Module):
  """ResNet backbone with torchvision attribute names; `fc` starts as Identity.

  Attributes:
    num_features: Dimension of the pooled features fed to `fc`.
  """

  def __init__(self, depth, width=64, small_stem=False):
    super().__init__()
    if depth not in _CONFIGS:
      raise ValueError(f'Unsupported depth {depth}; expected 18 or 50.')
    block, counts = _CONFIGS[depth]
    self.depth = depth
    if small_stem:
      # Tiny images (e.g. 32x32) would be reduced to nothing by the 7x7/2 stem
      # followed by the max pool.
      self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
      self.maxpool = nn.Identity()
    else:
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    in_planes = width
    for i, (count, stride) in enumerate(zip(counts, [1, 2, 2, 2])):
      planes = width * 2**i
      blocks = []
      for j in range(count):
        blocks.append(block(in_planes, planes, stride if j == 0 else 1))
        in_planes = planes * block.expansion
      setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Identity()
    self.num_features = in_planes
    self._init_weights()

  def _init_weights(self):
    for mod in self.modules():
      if isinstance(mod, nn.Conv2d):
        nn.init.kaiming_normal_(mod.weight, mode='fan_out', nonlinearity='relu')
      elif isinstance(mod, nn.BatchNorm2d):
        nn.init.ones_(mod.weight)
        nn.init.zeros_(mod.bias)
    # Zero-init the last BN of every residual branch so that each block starts
    # as the identity, which stabilises early training.
    for mod in self.modules():
      if isinstance(mod, (BasicBlock, Bottleneck)):
        nn.init.zeros_(mod.last_bn().weight)

  def features(self, x):
    """Pooled, flattened backbone features (everything before `fc`)."""
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x):
    return self.fc(self.features(x))


def resnet(depth: int, width: int = 64, small_stem: bool = False) -> nn.Module:
  """Builds a ResNet-18 or ResNet-50 whose state_dict keys match torchvision."""
  return ResNet(depth, width, small_stem)


def feature_dim(module: nn.Module) -> int:
  """Returns the pooled feature dimension of a network built by `resnet`."""
  return module.num_features


def build_mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int,
              last_bn: bool = True) -> nn.Sequential:
  """MoCo v3 projector / predictor MLP (bias-free linears, BN between)."""
  layers = []
  for l in range(num_layers):
    dim_in = input_dim if l == 0 else mlp_dim
    dim_out = output_dim if l == num_layers - 1 else mlp_dim
    layers.append(nn.Linear(dim_in, dim_out, bias=False))
    if l < num_layers - 1:
      layers.append(nn.BatchNorm1d(dim_out))
      layers.append(nn.ReLU(inplace=True))
    elif last_bn:
      # Affine-free BN on the output, as in the MoCo v3 projector.
      layers.append(nn.BatchNorm1d(dim_out, affine=False))
  return nn.Sequential(*layers)


class MoCoV3(nn.Module):
  """MoCo v3 with a ResNet backbone, single process (no all_gather)."""

  def __init__(self, depth=50, width=64, small_stem=False, dim=256,
               mlp_dim=4096, T=1.0):
    super().__init__()
    self.depth = depth
    self.T = T
    self.base_encoder = resnet(depth, width, small_stem)
    self.momentum_encoder = resnet(depth, width, small_stem)
    n = self.base_encoder.num_features
    self.base_encoder.fc = build_mlp(2, n, mlp_dim, dim)
    self.momentum_encoder.fc = build_mlp(2, n, mlp_dim, dim)
    self.predictor = build_mlp(2, dim, mlp_dim, dim, last_bn=False)
    # The momentum encoder starts as a copy and is only ever updated by EMA.
    # Buffers are not copied: both encoders' buffers are equal at init.
    for pb, pm in zip(self.base_encoder.parameters(),
                      self.momentum_encoder.parameters()):
      pm.data.copy_(pb.data)
      pm.requires_grad = False

  def contrastive_loss(self, q, k):
    """InfoNCE with the positives on the diagonal, scaled by 2T."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    logits = q @ k.t() / self.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) * (2 * self.T)

  @torch.no_grad()
  def update_momentum_encoder(self, m):
    """EMA of the parameters (never the buffers) into the momentum encoder."""
    for pb, pm in zip(self.base_encoder.parameters(),
                      self.momentum_encoder.parameters()):
      pm.mul_(m).add_(pb.detach(), alpha=1 - m)

  def forward(self, x1, x2, m):
    """Symmetrised MoCo v3 loss for two views; updates the momentum encoder."""
    # Separate calls so each view is normalised with its own BN batch.
    q1 = self.predictor(self.base_encoder(x1))
    q2 = self.predictor(self.base_encoder(x2))
    with torch.no_grad():
      self.update_momentum_encoder(m)
      # Keys always use batch statistics, as during training, even when the
      # module has been put in eval mode.
      was_training = self.momentum_encoder.training
      self.momentum_encoder.train()
      k1 = self.momentum_encoder(x1)
      k2 = self.momentum_encoder(x2)
      self.momentum_encoder.train(was_training)
    return self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)

  def features(self, x):
    """Pooled backbone features of the base encoder (before the projector)."""
    return self.base_encoder.features(x)


class LARS(torch.optim.Optimizer):
  """LARS as used by MoCo v3: no weight decay or trust ratio for ndim <= 1."""

  def __init__(self, params, lr=0, weight_decay=0, momentum=0.9,
               trust_coefficient=0.001):
    defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                    trust_coefficient=trust_coefficient)
    super().__init__(params, defaults)

  @torch.no_grad()
  def step(self, closure=None):
    loss = None
    if closure is not None:
      with torch.enable_grad():
        loss = closure()
    for group in self.param_groups:
      for p in group['params']:
        # Frozen parameters (the momentum encoder) have no grad: skip them.
        if p.grad is None:
          continue
        dp = p.grad
        if p.ndim > 1:
          dp = dp.add(p, alpha=group['weight_decay'])
          p_norm, dp_norm = torch.norm(p), torch.norm(dp)
          if p_norm > 0 and dp_norm > 0:
            dp = dp.mul(group['trust_coefficient'] * p_norm / dp_norm)
        mu = self.state[p].setdefault('mu', torch.zeros_like(p))
        mu.mul_(group['momentum']).add_(dp)
        p.add_(mu, alpha=-group['lr'])
    return loss


def official_state_dict(model: MoCoV3) -> dict:
  """State dict with DistributedDataParallel's `module.` prefix on every key."""
  return {f'module.{k}': v for k, v in model.state_dict().items()}


def save_official_checkpoint(model: MoCoV3, path, epoch=100):
  """Saves `model` in the layout of the official `r-50-100ep.pth.tar`."""
  torch.save({'epoch': epoch, 'arch': f'resnet{model.depth}',
              'state_dict': official_state_dict(model)}, path)
