"""Optional concept descriptors from a causal language model ("Ours++", paper §2.3, C.2).

A query is `descriptor + ' ' + concept` ("baby duck"). The paper sampled descriptors from
GPT-J-6B; any local causal LM that transformers can load works here. Per C.2:
  - the prompt is `PROMPT` (verbatim, typographic quotes around the concept);
  - sampling at temperature 0.9, at most 100 new tokens;
  - the completion is truncated at its first `,` `.` `_` or newline.

Choices where the paper is silent (also in docs/DECISIONS.md):
  - the cut character is dropped: the descriptor is the text *before* it, stripped, with
    inner whitespace and control-character runs collapsed to one space ("a good-looking
    dog," -> "a good-looking dog"). A trailing comma or period only adds noise to a
    search query;
  - a truncated completion is degenerate when it is empty, has no letter or digit (only
    punctuation or symbols), or contains the concept (case-insensitive, underscores read as
    spaces). Degenerate completions are resampled, up to `max_tries` draws in all; after
    that the descriptor is None and the query is the bare concept (the "Ours" query);
  - top-k 50 is kept: it is transformers' default whenever only a temperature is given,
    which is all the paper states;
  - every request (concept, seed, draw) samples with its own torch generator through the
    Gumbel-max trick (argmax of logits / T + Gumbel noise is an exact sample from the
    softmax), so a descriptor does not depend on which other concepts share its batch, or
    on the batch size, and a cache keyed by (model, concept, seed, draw) is well defined.
    The paper draws a fresh descriptor every time a concept is queried: `draw` says which
    time this is.

torch is optional (the `torch` extra). This module imports without it; asking for a model
raises an ImportError that names the extra.
"""
import hashlib
import json
import logging
import os
import re

from ie_jax.concepts import cache
from ie_jax.utils import atomic

log = logging.getLogger(__name__)

PROMPT = ('What are some words that describe the quality of \u2018{concept}\u2019?\n'
          'The {concept} is frail.\n'
          'The {concept} is red.\n'
          'The {concept} is humongous.\n'
          'The {concept} is tall.\n'
          'The {concept} is')
CUT_CHARACTERS = ',._\n'
TEMPERATURE = 0.9
MAX_NEW_TOKENS = 100
TOP_K = 50
MAX_TRIES = 5
# Bump when truncation, degeneracy or sampling change, so stale caches are not reused.
_FORMAT = 1
_CUT = re.compile('[' + re.escape(CUT_CHARACTERS) + ']')
# Files above this size (the weights) are fingerprinted by name and size, not content:
# hashing GPT-J's 24 GB at every start would take minutes.
_HASH_LIMIT_BYTES = 1 << 24


class ModelNotFoundError(FileNotFoundError):
  """The language model is neither a local directory nor available from the HF cache."""


def _require_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Concept descriptors run a PyTorch language model: install the torch extra '
        "(`pip install 'ie-jax[torch]'`), or run without descriptors.") from e
  return torch


def build_prompt(concept: str) -> str:
  return PROMPT.format(concept=concept)


def truncate_completion(completion: str) -> str:
  """The text before the first cut character, stripped, whitespace runs collapsed.

  Control characters count as whitespace: a search query has no use for them.
  """
  kept = _CUT.split(completion, maxsplit=1)[0]
  return ' '.join(''.join(ch if ch.isprintable() else ' ' for ch in kept).split())


def is_degenerate(descriptor: str, concept: str) -> bool:
  """Whether a truncated completion must be resampled (module docstring)."""
  if not any(ch.isalnum() for ch in descriptor):
    return True
  return concept.replace('_', ' ').casefold() in descriptor.casefold()


def descriptor_from_completion(completion: str, concept: str) -> str | None:
  """The descriptor in a raw completion, or None when it is degenerate."""
  descriptor = truncate_completion(completion)
  return None if is_degenerate(descriptor, concept) else descriptor


def make_query(concept: str, descriptor: str | None) -> str:
  return concept if descriptor is None else f'{descriptor} {concept}'


def _request_seed(seed: int, draw: int, concept: str, attempt: int) -> int:
  text = json.dumps([seed, draw, concept, attempt])
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], 'little') >> 1


def directory_fingerprint(directory: str) -> str:
  """Hash of a model directory: small files by content, large ones by name and size."""
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      digest.update(f'{os.path.relpath(path, directory)}\0{size}\0'.encode())
      if size <= _HASH_LIMIT_BYTES:
        digest.update(cache.file_sha256(path).encode())
  return digest.hexdigest()


class _GumbelSampler:
  """A logits processor that turns greedy decoding into per-row seeded sampling.

  Each row's scores become top-k(logits) / T + Gumbel noise drawn from that row's own
  generator, so `generate(do_sample=False)` picks an exact sample for every row. A plain
  callable, not a transformers class, so that this module imports without torch.
  """

  def __init__(self, generators, temperature: float, top_k: int):
    self.generators = generators
    self.temperature = temperature
    self.top_k = top_k

  def __call__(self, input_ids, scores):
    torch = _require_torch()
    scores = scores.float() / self.temperature
    if 0 < self.top_k < scores.shape[-1]:
      kth = torch.topk(scores, self.top_k, dim=-1).values[:, -1:]
      scores = scores.masked_fill(scores < kth, -float('inf'))
    # -log(Exponential(1)) is Gumbel(0, 1).
    noise = torch.stack([
        -torch.empty(scores.shape[-1], device=scores.device).exponential_(generator=g).log()
        for g in self.generators])
    return scores + noise


class DescriptorSampler:
  """Samples, resamples and caches descriptors with one causal LM.

  Args:
    model: a transformers causal LM (in eval mode on its device).
    tokenizer: its tokenizer; padding is set to the left (decoder-only generation).
    model_key: identifies the model in the cache key, e.g. `directory_fingerprint`.
    batch_size: prompts per `generate` call.
    max_tries: draws per request before falling back to no descriptor.
    temperature, top_k, max_new_tokens: sampling settings (module docstring).
    cache_dir: root of the on-disk cache; default `cache.default_cache_dir()`. None
      entries (no usable completion) are cached too.
    use_cache: read and write the on-disk cache.
  """

  def __init__(self, model, tokenizer, *, model_key: str, batch_size: int = 16,
               max_tries: int = MAX_TRIES, temperature: float = TEMPERATURE,
               top_k: int = TOP_K, max_new_tokens: int = MAX_NEW_TOKENS,
               cache_dir: str | None = None, use_cache: bool = True):
    if max_tries < 1:
      raise ValueError(f'max_tries must be at least 1, got {max_tries}.')
    self.model = model
    self.tokenizer = tokenizer
    self.tokenizer.padding_side = 'left'
    if self.tokenizer.pad_token is None:
      if self.tokenizer.eos_token is None:
        raise ValueError('The tokenizer has neither a pad nor an end-of-sequence token.')
      self.tokenizer.pad_token = self.tokenizer.eos_token
    self.batch_size = batch_size
    self.max_tries = max_tries
    self.temperature = temperature
    self.top_k = top_k
    self.max_new_tokens = max_new_tokens
    settings = json.dumps({
        'format': _FORMAT, 'model': model_key, 'prompt': PROMPT, 'cut': CUT_CHARACTERS,
        'temperature': temperature, 'top_k': top_k, 'max_new_tokens': max_new_tokens,
        'max_tries': max_tries}, sort_keys=True)
    self.cache_path = None
    if use_cache:
      name = hashlib.sha256(settings.encode()).hexdigest()[:24]
      self.cache_path = os.path.join(cache_dir or cache.default_cache_dir(), 'descriptors',
                                     f'{name}.json')
    self._entries = None

  @classmethod
  def from_pretrained(cls, name_or_path: str, *, device: str | None = None,
                      dtype: str = 'auto', allow_download: bool | None = None,
                      hf_cache_dir: str | None = None, **kwargs) -> 'DescriptorSampler':
    """Loads a local model directory or a Hugging Face id (e.g. 'EleutherAI/gpt-j-6b').

    Args:
      name_or_path: a directory holding a transformers causal LM and its tokenizer, or a
        Hub id, looked up in the HF cache.
      device: default 'cuda' when available, else 'cpu'.
      dtype: passed to `from_pretrained` ('auto': the checkpoint's own).
      allow_download: fetch a Hub id that is not cached; default: unless
        `HF_HUB_OFFLINE` is set. Without it the network is never used.
      hf_cache_dir: the Hugging Face hub cache; default the library's.
      **kwargs: for the constructor.

    Raises:
      ImportError: torch is not installed.
      ModelNotFoundError: the model is neither a directory nor (allowed to be) fetched.
    """
    torch = _require_torch()
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    from transformers import AutoModelForCausalLM  # pylint: disable=g-import-not-at-top
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    if allow_download is None:
      allow_download = not huggingface_hub.constants.HF_HUB_OFFLINE
    local = os.path.isdir(name_or_path)
    options = {'cache_dir': hf_cache_dir, 'local_files_only': local or not allow_download}
    try:
      tokenizer = AutoTokenizer.from_pretrained(name_or_path, **options)
      model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **options)
    except (OSError, ValueError) as e:
      where = 'the directory' if local else (
          'the Hugging Face cache and Hub' if allow_download
          else 'the Hugging Face cache (downloads not allowed)')
      raise ModelNotFoundError(
          f'No causal language model {name_or_path!r} in {where}: {e}. Pass a local '
          f'model directory, or download it with `huggingface-cli download '
          f'{name_or_path}`.') from e
    if not local:
      name_or_path = huggingface_hub.snapshot_download(
          name_or_path, cache_dir=hf_cache_dir, local_files_only=True)
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    return cls(model.to(device).eval(), tokenizer,
               model_key=directory_fingerprint(name_or_path), **kwargs)

  def complete(self, prompts, seeds) -> list[str]:
    """One batched generation: the decoded new text of each prompt, row i seeded by seeds[i]."""
    torch = _require_torch()
    device = self.model.device
    batch = self.tokenizer(list(prompts), return_tensors='pt', padding=True).to(device)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    with torch.inference_mode():
      out = self.model.generate(
          **batch, do_sample=False, max_new_tokens=self.max_new_tokens,
          logits_processor=[_GumbelSampler(generators, self.temperature, self.top_k)],
          pad_token_id=self.tokenizer.pad_token_id)
    new_tokens = out[:, batch['input_ids'].shape[1]:]
    return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

  def descriptors(self, concepts, *, seed: int, draws=None) -> list[str | None]:
    """One descriptor (or None) per concept.

    Args:
      concepts: display forms; repeats are allowed.
      seed: the run's seed (fold in the iteration for fresh draws each iteration).
      draws: which draw of each concept this is; default its occurrence count within
        this call (0 for the first "duck", 1 for the second).

    Returns:
      Descriptors in the order of `concepts`; None where every one of `max_tries`
      completions was degenerate (a warning is logged).
    """
    concepts = list(concepts)
    if draws is None:
      seen = {}
      draws = []
      for concept in concepts:
        draws.append(seen.get(concept, 0))
        seen[concept] = draws[-1] + 1
    keys = [json.dumps([seed, int(d), c]) for c, d in zip(concepts, draws)]
    entries = self._load()
    # Short prompts together pad least; the key breaks ties so that the order is fixed.
    todo = sorted({k for k in keys if k not in entries},
                  key=lambda k: (len(json.loads(k)[2]), k))
    found = {}
    for attempt in range(self.max_tries):
      if not todo:
        break
      degenerate = []
      for start in range(0, len(todo), self.batch_size):
        rows = [json.loads(k) for k in todo[start:start + self.batch_size]]
        completions = self.complete([build_prompt(c) for _, _, c in rows],
                                    [_request_seed(s, d, c, attempt) for s, d, c in rows])
        for key, (_, _, concept), text in zip(todo[start:], rows, completions):
          descriptor = descriptor_from_completion(text, concept)
          if descriptor is None:
            degenerate.append(key)
          else:
            found[key] = descriptor
      todo = degenerate
    if todo:
      log.warning('%d of %d descriptor requests gave no usable completion in %d tries; '
                  'they query the bare concept.', len(todo), len(keys), self.max_tries)
    found.update(dict.fromkeys(todo))
    if found:
      entries.update(found)
      self._save()
    return [entries[k] for k in keys]

  def queries(self, concepts, *, seed: int, draws=None) -> list[str]:
    """`descriptor + ' ' + concept` per concept (the bare concept where there is none)."""
    concepts = list(concepts)
    return [make_query(c, d) for c, d in
            zip(concepts, self.descriptors(concepts, seed=seed, draws=draws))]

  def _load(self) -> dict:
    if self._entries is None:
      self._entries = {}
      if self.cache_path and os.path.exists(self.cache_path):
        try:
          with open(self.cache_path, encoding='utf-8') as f:
            self._entries = json.load(f)['entries']
        except (OSError, ValueError, KeyError, TypeError) as e:
          log.warning('Ignoring unreadable descriptor cache %s: %s', self.cache_path, e)
    return self._entries

  def _save(self) -> None:
    if self.cache_path is None:
      return
    data = json.dumps({'entries': self._entries}, ensure_ascii=False).encode('utf-8')
    # The whole file is rewritten: one process writes a given cache file at a time.
    atomic.write(self.cache_path, lambda f: f.write(data))
