"""The WordNet 3.0 noun vocabulary: its size, the paper's example text, the cache, errors.

Needs WordNet 3.0 (`apt-get install wordnet-base wordnet-sense-index` in CI).
"""
import os
import shutil

import pytest

from ie_jax.concepts import vocab
from ie_jax.concepts import wordnet

# Paper §2.5, verbatim.
CHIHUAHUA = ('Chihuahua (toy dog): an old breed of tiny short-haired dog with protruding '
             'eyes from Mexico held to antedate Aztec civilization.')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """One read of WordNet per session (about 5 s); every other test uses its cache."""
  cache_dir = str(tmp_path_factory.mktemp('vocab_cache'))
  source = wordnet.find_wordnet(nltk_paths=[])  # Debian's files, as in CI
  return cache_dir, source, vocab.load_vocabulary(cache_dir, source)


def test_size_is_wordnet30_lemma_synset_pairs(built):
  _, _, v = built
  assert len(v) == 146_347
  assert len(set(zip(v.synsets, v.lemmas))) == 146_347
  assert len(set(v.lemmas)) < len(v)  # not deduplicated strings


def test_paper_example_text(built):
  _, _, v = built
  i = v.synsets.index('chihuahua.n.03')
  assert v.lemmas[i] == 'Chihuahua'
  assert v.texts[i] == CHIHUAHUA


def test_duplicate_lemmas_are_distinct_concepts(built):
  _, _, v = built
  senses = [i for i, lemma in enumerate(v.lemmas) if lemma == 'bass']
  assert len(senses) == 8  # bass.n.01 ... bass.n.08 in WordNet 3.0
  assert len({v.synsets[i] for i in senses}) == 8
  assert len({v.texts[i] for i in senses}) == 8


def test_display_form_keeps_case_and_spaces(built):
  _, _, v = built
  lemmas = set(v.lemmas)
  for example in ('human face', 'family Crassulaceae', 'Ipomoea imperialis', 'Davis',
                  "pere david's deer", 'San Joaquin River'):  # paper C.1
    assert example in lemmas, example
  assert not any('_' in lemma for lemma in v.lemmas)


def test_hypernym_rules_for_instances_and_the_root(built):
  _, _, v = built
  root = [v.texts[i] for i, s in enumerate(v.synsets) if s == 'entity.n.01']
  assert root == ['entity: that which is perceived or known or inferred to have its own '
                  'distinct existence (living or nonliving).']
  # John Davis the navigator is an instance of navigator.n.03 and has no hypernym.
  davis = [v.texts[i] for i, lemma in enumerate(v.lemmas) if lemma == 'John Davis']
  assert davis == ['John Davis (navigator): English navigator who explored the Arctic '
                   'while searching for the Northwest Passage (1550-1605).']
  # No doubled period; the only '..' endings are the ellipses of pi and e in WordNet.
  assert [t[:2] for t in v.texts if t.endswith('..')] == ['pi', 'e ']


def test_concept_text_template():
  assert vocab.concept_text('duck', 'anseriform bird', 'small wild or domesticated web-footed'
                            ' broad-billed swimming bird') == (
      'duck (anseriform bird): small wild or domesticated web-footed broad-billed '
      'swimming bird.')
  assert vocab.concept_text('x', None, 'a thing etc.') == 'x: a thing etc.'


def test_second_load_uses_the_cache(built, monkeypatch):
  cache_dir, source, v = built

  def no_reading(*args, **kwargs):
    raise AssertionError('WordNet was read again instead of the cache')

  monkeypatch.setattr(wordnet, 'open_wordnet', no_reading)
  assert vocab.load_vocabulary(cache_dir, source) == v


def test_lexnames_file_and_nltk_layout(built, tmp_path):
  cache_dir, source, _ = built
  lines = wordnet.lexnames_text().splitlines()
  assert len(lines) == 45
  assert lines[0] == '00\tadj.all\t3' and lines[5] == '05\tnoun.animal\t1'
  assert lines[44] == '44\tadj.ppl\t3'
  # Our Debian copy (with our lexnames) laid out as NLTK data must be found and read.
  copy = [d for d in os.listdir(cache_dir) if d.startswith('wordnet-')][0]
  shutil.copytree(os.path.join(cache_dir, copy), tmp_path / 'corpora' / 'wordnet')
  found = wordnet.find_wordnet(nltk_paths=[str(tmp_path)], debian_dirs=())
  assert found.kind == 'nltk'
  with wordnet.open_wordnet(found) as reader:
    chihuahua = reader.synset('chihuahua.n.03')
    assert chihuahua.lexname() == 'noun.animal'
    assert reader.synset('entity.n.01').lexname() == 'noun.Tops'


def test_missing_wordnet_says_how_to_install(tmp_path):
  with pytest.raises(wordnet.WordNetNotFoundError) as e:
    wordnet.find_wordnet(nltk_paths=[str(tmp_path)], debian_dirs=(str(tmp_path),))
  message = str(e.value)
  assert 'apt-get install wordnet-base wordnet-sense-index' in message
  assert 'python -m nltk.downloader wordnet' in message
  assert str(tmp_path) in message
