"""Shared config blocks with the paper's values as defaults.

Every value here is an input (`paper.md` Table 6 and the MoCo v3 defaults it inherits).
Derived values (the batch-scaled lr, steps per epoch) are computed in code, never stored.
`get_base_config()` is also the schema: `ie_jax.utils.config_check` rejects any key a
config adds that is not here, and any value of another type.
"""
import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses `get_config` arguments such as 'runlocal,steps=10' against typed defaults.

  A bare name sets a boolean to True. Values are cast to the default's type, and unknown
  names fail with the valid ones listed.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, _, value = item.partition('=')
    if name not in defaults:
      raise ValueError(f'Unknown config argument {name!r}; valid: {sorted(defaults)}.')
    kind = type(defaults[name])
    if kind is bool:
      if value not in ('', 'true', 'True', '1', 'false', 'False', '0'):
        raise ValueError(f'Config argument {name!r} is boolean, got {value!r}.')
      out[name] = value in ('', 'true', 'True', '1')
    else:
      try:
        out[name] = kind(value)
      except ValueError as e:
        raise ValueError(f'Config argument {name!r} must be {kind.__name__}, got {value!r}.') from e
  return out


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Model section: ResNet-50 + MoCo v3 heads (moco-v3 defaults for ResNets).
  config.model = ml_collections.ConfigDict(dict(
      depth=50,
      width=64,
      small_stem=False,   # 3x3 stride-1 stem without max-pool, for 32-px images
      dim=256,            # projector / predictor output
      mlp_dim=4096,       # hidden width of both MLPs
      dtype='float32',    # compute dtype: 'float32' or 'bfloat16'
  ))

  # MoCo v3 section.
  config.moco = ml_collections.ConfigDict(dict(
      temperature=1.0,              # T = 1.0 for ResNets (0.2 is the ViT value)
      momentum=0.9985,              # paper Table 6: constant EMA momentum
      momentum_schedule='constant',  # or 'cosine' (MoCo v3's ramp to 1)
      image_size=224,
      crop_min=0.2,                 # RandomResizedCrop min area (paper Table 6)
  ))

  # Optimizer section: LARS, lr = base_lr * batch / 256, constant (paper Table 6).
  config.optim = ml_collections.ConfigDict(dict(
      name='lars',
      base_lr=0.8,
      weight_decay=1e-6,
      momentum=0.9,
      trust_coefficient=0.001,
      schedule='constant',    # or 'cosine' (MoCo v3's warm-up + cosine)
      warmup_fraction=0.0,    # of the total steps, for 'cosine'
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=224,   # global, over all devices and processes
      epochs=10,        # SSL epochs over the target set (plain MoCo v3 runs)
  ))

  # Target section: the unlabeled target set.
  config.target = ml_collections.ConfigDict(dict(
      name='shapes',      # see ie_jax.data.target.LOADERS
      data_dir='',        # TFDS data dir, or the root of a 'folder' target
      split='train',
      num_examples=0,     # 0: the whole split; >0 caps it (smoke runs)
      image_size=64,      # stored size of generated targets
  ))

  # Input pipeline section.
  config.data = ml_collections.ConfigDict(dict(
      num_workers=8,   # Grain decode/crop worker processes (0: in the main process)
  ))

  # Initialisation: '' starts from scratch (with a warning); else the path of the official
  # MoCo v3 PyTorch checkpoint (r-50-100ep.pth.tar).
  config.init_checkpoint = ''

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.checkpoints_to_keep = 3
  return config
