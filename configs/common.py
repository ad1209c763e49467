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
      backbone='resnet',  # the paper's; 'efficientnet-lite0' for the CPU demo's ImageNet start
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
      epochs_per_iteration=10,  # SSL epochs over each explore iteration's mixture
  ))

  # Target section: the unlabeled target set.
  config.target = ml_collections.ConfigDict(dict(
      name='shapes',      # see ie_jax.data.target.LOADERS
      data_dir='',        # TFDS data dir, or the root of a 'folder' target
      download=False,     # TFDS: download and prepare an unprepared dataset at run time
      split='train',
      num_examples=0,     # 0: the whole split; >0 caps it (smoke runs)
      image_size=64,      # stored size of generated targets
  ))

  # Input pipeline section.
  config.data = ml_collections.ConfigDict(dict(
      num_workers=8,   # Grain decode/crop worker processes (0: in the main process)
  ))

  # Explore section: the loop itself. One iteration = sample (config.concepts), search,
  # reward, train, replay, update; the sections below are named after those steps.
  config.explore = ml_collections.ConfigDict(dict(
      iterations=40,               # the paper runs ~20-55 (Figs. 5/7); no stopping rule given
  ))

  # Search section: what each iteration asks the engine (config.web: how).
  config.search = ml_collections.ConfigDict(dict(
      queries_per_iteration=256,
      images_per_query=100,
  ))

  # Reward section: image rewards, and the concept scores made of them.
  config.reward = ml_collections.ConfigDict(dict(
      k=15,                        # image reward = mean cos-sim to the 15 nearest targets
      top_images=10,               # concept score = mean of its top-10 image rewards
      min_images=10,               # query_scoring 'new': fewer images, the query is not scored
      # Which of a query's images score it (query_scores.QueryScoring): 'all' its results,
      # earlier downloads at their stored rewards, so every query is observed; 'yield'
      # (only its new images; unfilled slots at the iteration's lowest reward); 'new' (only
      # its new images, unobserved under min_images: the pre-#19 rule).
      query_scoring='all',
      embed_batch_size=256,        # images per embed_step call
  ))

  # Replay section: what each iteration trains on besides its new images, and what it keeps.
  config.replay = ml_collections.ConfigDict(dict(
      pcr=2.0,                     # old images (replay ∪ target) per new candidate
      fraction=-1.0,               # share of old images from replay; <0: uniform over B ∪ D
      keep=0.5,                    # top 50% of candidates by reward join the replay buffer
  ))

  # Init section: the encoder the loop starts from (config.init_checkpoint: the weights).
  config.init = ml_collections.ConfigDict(dict(
      finetune_epochs=0,           # initial SSL fine-tune on the target (0: none)
      # Where no pre-trained encoder can be had (the CPU demo), a stand-in for the paper's
      # ImageNet pre-training before that fine-tune: MoCo v3 on images drawn uniformly from
      # the local engine's corpus, blind to the target (ie_jax.warmup). 0 epochs: none.
      warmup_epochs=0,
      warmup_images=0,             # size of that uniform sample (0: the whole corpus)
  ))

  # Monitor section: what a run reports beside the algorithm (ie_jax/explore/monitor.py).
  config.monitor = ml_collections.ConfigDict(dict(
      knn_examples=2000,           # k-NN accuracy on this many target test images per
                                   # iteration (paper Figs. 5/7); 0: off
  ))

  # Concepts section: the vocabulary and the policy over it.
  config.concepts = ml_collections.ConfigDict(dict(
      vocab='wordnet',             # 'wordnet' (146,347 noun lemma-senses) or a .tsv path
      # >0 keeps the WordNet senses tagged at least this often in SemCor (16,816 at 1):
      # a smaller everyday vocabulary for CPU runs, blind to the target. 0: all (paper).
      min_lemma_count=0,
      mode='learned',              # random | learned | labels | labels+relevant | labels+learned
      smr=3.0,                     # softmax range: temperature = (max - min) / smr
      tier_bounds=(250, 1000),
      tier_masses=(0.8, 0.1, 0.1),
      gp_length_scale=1.0,
      gp_alpha=1e-2,
      gp_normalize_y=True,
      sample_with_replacement=False,
      # Whether a concept whose query was searched before may be drawn again: a cached
      # engine answers a repeated query with what it already gave. Ignored with descriptors
      # (they vary the query). Senses sharing a lemma share a query.
      redraw_searched=False,
      # The GP's input: 'text' ("{lemma} ({hypernym}): {definition}", the paper's),
      # 'text+query' (that and the searched query's own embedding, side by side) or
      # 'captions' (fitted to the downloaded images' captions and rewards, predicted at
      # each concept's query text; DECISIONS, "The policy in a finite web").
      gp_input='text',
      gp_max_captions=8192,        # 'captions': the GP fits a uniform sample of this many
      text_model='',               # MiniLM directory; '' finds it (HF cache, wheel)
      # "Ours++": a local causal LM (directory or cached HF id, e.g. 'EleutherAI/gpt-j-6b')
      # prepends a descriptor to each query; '' = plain concepts ("Ours").
      descriptor_model='',
      # Label-set modes: class names are embedded as "{name} ({category})." (paper Table 5
      # categories: Flower, Pet, Food, Bird, Object); the paper's Wikipedia summaries need
      # the network, so they are not used.
      label_category='object',
      prune_fraction=0.1,          # label-set modes keep the 10% of concepts closest to the labels
  ))

  # Web section: the search engine and the downloader.
  config.web = ml_collections.ConfigDict(dict(
      # local | url_corpus | openverse | flickr | wikimedia | clip_retrieval | google
      engine='local',
      engine_url='',               # base URL override (self-hosted clip-retrieval, tests)
      local_index='',              # index directory of the local engine
      url_index='',                # index directory of the url_corpus engine (a url table's)
      search_concurrency=8,
      concurrency=64,
      per_host=8,
      # A host's limit grows (+1 per limit's worth of timely answers) up to this and halves
      # on 429, 503, and on timeouts and refused connections when they are half of its
      # recent requests (ie_jax/web/host_slots.py).
      max_per_host=32,
      # A request this many times slower than its host's median (and >= slow_min_s) gives
      # its host slot back (ie_jax/web/host_slots.py); 0: never.
      slow_factor=4.0,
      slow_min_s=2.0,
      # An iteration whose engine quota refused more than this share of its queries stops
      # the run before any download (ie_jax.explore.search.QuotaStop), or with wait_for_quota
      # waits for the reset (the API's Retry-After, else quota_wait_s) and asks again.
      max_quota_loss=0.1,
      wait_for_quota=False,
      quota_wait_s=900.0,
      timeout_s=30.0,
      min_side=64,
      max_side=256,                # stored short side; >= the 224 training crops
      allow_networks='',           # comma-separated CIDRs the SSRF guard lets through
      file_roots='',               # comma-separated dirs file:// URLs may read
      part_size=2000,              # images per committed store part
      # Decode/resize/encode in this many worker processes (-1: one per core); 0 uses
      # threads. Threads by default: processes were not measurably faster on 2 cores and
      # cost a pool start per search phase (docs/DECISIONS.md, "Downloader").
      decode_processes=0,
  ))

  # An offline world to build and explore ('' = none): see ie_jax.worlds. It is built into
  # world_dir ('' = WORKDIR/world); runs that share a world_dir build it once.
  config.world = ''
  config.world_dir = ''

  # What a launch does after exploring (ie_jax.session).
  config.evaluate = ml_collections.ConfigDict(dict(
      final_probe=False,   # linear + k-NN probe of the last checkpoint on the target test split
      # Comma-separated concept modes to run side by side into WORKDIR/<mode> with one
      # comparison report ('' = one run, config.concepts.mode, in WORKDIR).
      compare_modes='',
      # With compare_modes: comma-separated seeds, each mode run once per seed into
      # WORKDIR/seed-<s>/<mode>, the report giving each mode's mean and spread ('' = the
      # config's seed, into WORKDIR/<mode>).
      compare_seeds='',
      # On a world with ground truth: the policy's "relevant mass" is on the concepts of
      # these comma-separated WordNet lexnames ('' = on the concepts whose query returns
      # mostly target-class images in that world: ie_jax.worlds.scoring).
      relevant_lexnames='',
  ))

  # Initialisation: '' starts from scratch (with a warning); else the path of the official
  # MoCo v3 PyTorch checkpoint (r-50-100ep.pth.tar).
  config.init_checkpoint = ''

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.checkpoints_to_keep = 3
  return config


def paper_config(arg: str | None, *, target: str, iterations: int, category: str):
  """The paper's setting for one target, with the usual `get_config` switches.

  Arguments (e.g. 'engine=flickr,mode=random,descriptors=/models/gpt-j-6b,iterations=20'):
    engine: a search engine name (config.web.engine); the paper used Google Images.
    mode: random | learned | labels | labels+relevant | labels+learned.
    descriptors: a causal LM for "Ours++" descriptors ('' for "Ours").
    iterations: explore iterations (the paper's count read off its Figs. 5/7).
    data_dir: TFDS data dir (or the folder root of folder targets).
    init: the official MoCo v3 checkpoint (r-50-100ep.pth.tar); '' trains from scratch.
  """
  arg = parse_arg(arg, engine='openverse', mode='learned', descriptors='',
                  iterations=iterations, data_dir='', init='')
  config = get_base_config()
  config.target.name = target
  config.target.data_dir = arg.data_dir
  config.web.engine = arg.engine
  config.concepts.mode = arg.mode
  config.concepts.descriptor_model = arg.descriptors
  config.concepts.label_category = category
  config.explore.iterations = arg.iterations
  config.init_checkpoint = arg.init
  return config



def table1_sweep() -> list[dict]:
  """Table 1's exploration rows for a target, as config overrides."""
  return [{'config.concepts.mode': 'random'}, {'config.concepts.mode': 'learned'}]
