"""Descriptors: the prompt, truncation and degeneracy, resampling, seeding, the cache.

The language model is a tiny randomly initialised GPT-2 with a byte-level BPE tokenizer
trained here on a few sentences, so nothing is downloaded; its completions are gibberish,
which is what the degeneracy rules must survive. Needs torch (the `torch` extra).
"""
import json
import os
import subprocess
import sys

import pytest

from ie_jax.concepts import descriptors

torch = pytest.importorskip('torch')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CORPUS = ['The dog is red. The cat is tall, frail and humongous.\n',
           'What are some words that describe the quality of a duck_bass?\n']


def tiny_lm():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
  # Byte-level, like GPT-2's and GPT-J's: any text encodes, the ‘ ’ quotes included.
  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
      vocab_size=320, special_tokens=['<|endoftext|>'], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token='<|endoftext|>')
  torch.manual_seed(0)
  config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2,
                      n_head=2, bos_token_id=tokenizer.eos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
  return GPT2LMHeadModel(config).eval(), tokenizer


@pytest.fixture(scope='module')
def lm_dir(tmp_path_factory):
  """The tiny LM saved as a local model directory, as a user would point at GPT-J."""
  model, tokenizer = tiny_lm()
  path = tmp_path_factory.mktemp('tiny_gpt2')
  model.save_pretrained(path)
  tokenizer.save_pretrained(path)
  return str(path)


@pytest.fixture(scope='module')
def lm(lm_dir):
  sampler = descriptors.DescriptorSampler.from_pretrained(lm_dir, device='cpu',
                                                          use_cache=False)
  return sampler.model, sampler.tokenizer


def make_sampler(lm, tmp_path, **kwargs):
  model, tokenizer = lm
  kwargs.setdefault('cache_dir', str(tmp_path))
  return descriptors.DescriptorSampler(model, tokenizer, model_key='tiny', **kwargs)


def test_prompt_is_the_papers_verbatim():
  assert descriptors.build_prompt('labrador retriever') == (
      'What are some words that describe the quality of \u2018labrador retriever\u2019?\n'
      'The labrador retriever is frail.\n'
      'The labrador retriever is red.\n'
      'The labrador retriever is humongous.\n'
      'The labrador retriever is tall.\n'
      'The labrador retriever is')


@pytest.mark.parametrize('completion, expected', [
    (' a good-looking dog, and it is', 'a good-looking dog'),
    (' very gentle.\nThe dog', 'very gentle'),
    (' brown\nThe labrador retriever is tall', 'brown'),
    (' blue_eyed', 'blue'),
    (' a  strong\trunner. Yes', 'a strong runner'),   # whitespace runs collapse
    (' red\x00\x15dish, x', 'red dish'),               # control characters too
    (' lovable', 'lovable'),                          # no cut character: all of it
    (', big', ''),                                    # cut at the very start
    ('', ''),
])
def test_truncation_drops_the_cut_character_and_what_follows(completion, expected):
  assert descriptors.truncate_completion(completion) == expected


@pytest.mark.parametrize('descriptor, concept, degenerate', [
    ('', 'duck', True),
    ('   ', 'duck', True),
    ('!?-', 'duck', True),                    # only punctuation
    ('\ufffd\ufffd', 'duck', True),           # undecodable bytes, no letters
    ('a Duck', 'duck', True),                 # the concept, case-insensitive
    ('a labrador retriever', 'labrador_retriever', True),
    ('a retriever', 'labrador retriever', False),  # part of the concept is kept (paper)
    ('a', 'duck', False),                     # junk like "a" is kept (paper)
    ('baby', 'duck', False),
    ('42', 'duck', False),
])
def test_degeneracy(descriptor, concept, degenerate):
  assert descriptors.is_degenerate(descriptor, concept) is degenerate


def test_descriptor_from_completion_and_query():
  assert descriptors.descriptor_from_completion(' baby, yes', 'duck') == 'baby'
  assert descriptors.descriptor_from_completion(' a duck.', 'duck') is None
  assert descriptors.make_query('duck', 'baby') == 'baby duck'
  assert descriptors.make_query('duck', None) == 'duck'


def test_degenerate_completion_is_resampled_with_a_new_seed(lm, tmp_path, monkeypatch):
  sampler = make_sampler(lm, tmp_path)
  calls = []
  replies = iter([[' , fluffy'], [' the Duck.'], [' fluffy, and']])

  def fake_complete(prompts, seeds):
    calls.append((list(prompts), list(seeds)))
    return next(replies)

  monkeypatch.setattr(sampler, 'complete', fake_complete)
  assert sampler.queries(['duck'], seed=0) == ['fluffy duck']
  assert len(calls) == 3
  assert all(prompts == [descriptors.build_prompt('duck')] for prompts, _ in calls)
  assert len({seeds[0] for _, seeds in calls}) == 3


def test_lm_with_nothing_usable_falls_back_to_the_concept(lm, tmp_path, monkeypatch,
                                                          caplog):
  sampler = make_sampler(lm, tmp_path, max_tries=3)
  calls = []

  def useless(prompts, seeds):
    calls.append(len(prompts))
    return ['' for _ in prompts]

  monkeypatch.setattr(sampler, 'complete', useless)
  assert sampler.descriptors(['duck', 'bass'], seed=0) == [None, None]
  assert sampler.queries(['duck', 'bass'], seed=0) == ['duck', 'bass']
  assert calls == [2, 2, 2]  # three tries, then the cached None is reused
  assert 'no usable completion' in caplog.text


def test_cache_returns_descriptors_without_the_model(lm, tmp_path, monkeypatch):
  first = make_sampler(lm, tmp_path, max_new_tokens=12)
  got = first.descriptors(['duck', 'bass', 'duck'], seed=3)
  assert got[0] != got[2] or got[0] is None  # the second "duck" is a fresh draw
  files = os.listdir(tmp_path / 'descriptors')
  assert len(files) == 1
  # A new sampler (a new run) reads the file and never calls the model.
  second = make_sampler(lm, tmp_path, max_new_tokens=12)

  def fail(prompts, seeds):
    raise AssertionError('the model was called')

  monkeypatch.setattr(second, 'complete', fail)
  assert second.descriptors(['duck', 'bass', 'duck'], seed=3) == got
  assert second.descriptors(['bass'], seed=3, draws=[0]) == [got[1]]
  # Another seed, draw or model is another key.
  calls = []
  monkeypatch.setattr(second, 'complete',
                      lambda prompts, seeds: calls.append(1) or [' new'] * len(prompts))
  assert second.descriptors(['duck'], seed=3, draws=[2]) == ['new']
  assert second.descriptors(['duck'], seed=4) == ['new']
  assert len(calls) == 2
  third = descriptors.DescriptorSampler(*lm, model_key='other', cache_dir=str(tmp_path),
                                        max_new_tokens=12)
  assert third.cache_path != second.cache_path


def test_unreadable_cache_is_ignored(lm, tmp_path):
  sampler = make_sampler(lm, tmp_path, max_new_tokens=8)
  os.makedirs(os.path.dirname(sampler.cache_path))
  with open(sampler.cache_path, 'w', encoding='utf-8') as f:
    f.write('{"entries": ')
  assert len(sampler.descriptors(['duck'], seed=0)) == 1
  with open(sampler.cache_path, encoding='utf-8') as f:
    assert len(json.load(f)['entries']) == 1


def test_seeded_and_independent_of_batching(lm, tmp_path):
  concepts = ['duck', 'labrador retriever', 'bass', 'Chihuahua', 'sea anemone']
  together = make_sampler(lm, tmp_path, use_cache=False, batch_size=8, max_new_tokens=24)
  first = together.descriptors(concepts, seed=7)
  assert sum(d is not None for d in first) >= 3
  assert together.descriptors(concepts, seed=7) == first
  one_by_one = make_sampler(lm, tmp_path, use_cache=False, batch_size=1, max_new_tokens=24)
  assert one_by_one.descriptors(concepts[::-1], seed=7) == first[::-1]
  assert together.descriptors(concepts, seed=8) != first


def test_end_to_end_batch_with_the_tiny_model(lm_dir, tmp_path):
  sampler = descriptors.DescriptorSampler.from_pretrained(
      lm_dir, device='cpu', cache_dir=str(tmp_path), batch_size=3)
  concepts = ['duck', 'labrador retriever', 'bass', 'Chihuahua', 'sea anemone', 'duck']
  got = sampler.descriptors(concepts, seed=0)
  queries = sampler.queries(concepts, seed=0)
  assert len(got) == len(queries) == len(concepts)
  for concept, descriptor, query in zip(concepts, got, queries):
    if descriptor is None:
      assert query == concept
      continue
    assert isinstance(descriptor, str) and descriptor == descriptor.strip()
    assert concept.casefold() not in descriptor.casefold()
    assert not set(descriptors.CUT_CHARACTERS) & set(descriptor)
    assert any(ch.isalnum() for ch in descriptor)
    assert query == f'{descriptor} {concept}'
  assert any(d is not None for d in got)


def test_raw_completions_are_new_text_only(lm, tmp_path):
  sampler = make_sampler(lm, tmp_path, max_new_tokens=5, use_cache=False)
  prompts = [descriptors.build_prompt('duck'), descriptors.build_prompt('sea anemone')]
  # The tokenizer round-trips the prompt, typographic quotes included.
  assert sampler.tokenizer.decode(sampler.tokenizer(prompts[0])['input_ids']) == prompts[0]
  texts = sampler.complete(prompts, [1, 2])
  assert len(texts) == 2
  assert all('What are some words' not in t for t in texts)
  assert sampler.complete(prompts, [1, 2]) == texts


def test_missing_model_is_reported_without_the_network(tmp_path):
  with pytest.raises(descriptors.ModelNotFoundError, match='downloads not allowed'):
    descriptors.DescriptorSampler.from_pretrained(
        'no-such-org/no-such-model', allow_download=False, hf_cache_dir=str(tmp_path))
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(descriptors.ModelNotFoundError, match='directory'):
    descriptors.DescriptorSampler.from_pretrained(str(empty))


def test_imports_without_torch_and_names_the_extra():
  # A fresh interpreter in which `import torch` fails.
  code = (
      'import sys; sys.modules["torch"] = None\n'
      'from ie_jax.concepts import descriptors\n'
      'assert descriptors.truncate_completion(" red, big") == "red"\n'
      'try:\n'
      '  descriptors.DescriptorSampler.from_pretrained("anything")\n'
      'except ImportError as e:\n'
      '  print(e)\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=_ROOT,
                          check=True, timeout=60)
  assert "ie-jax[torch]" in result.stdout
