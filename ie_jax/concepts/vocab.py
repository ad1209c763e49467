"""The concept vocabulary: every WordNet 3.0 noun (lemma, synset) pair, 146,347 of them.

They are pairs, not strings: "bass" appears once per sense, each with its own hypernym and
definition, hence its own text embedding (paper §2.2; deduplicating strings would give
117,798). Each concept carries the text that is embedded (paper §2.5):

    "{lemma} ({hypernym}): {definition}."

Rules where the paper is silent:
  - the hypernym is the first lemma of the synset's first hypernym, else of its first
    instance hypernym ("Davis (navigator): ..."), underscores shown as spaces;
  - a root synset (only 'entity.n.01' in WordNet 3.0) has no parenthesis:
    "entity: that which is perceived ...";
  - the final period is not doubled when the definition already ends in '.', '!' or '?'
    (206 definitions, mostly "... etc.").
"""
import dataclasses
import hashlib
import json
import logging
import os

from ie_jax.concepts import cache
from ie_jax.concepts import wordnet
from ie_jax.utils import atomic

log = logging.getLogger(__name__)

# Bump when the text rule above changes, so stale caches are rebuilt.
_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Concepts by index. All three tuples have one entry per concept.

  Attributes:
    synsets: WordNet synset names, e.g. 'chihuahua.n.03' (repeated once per lemma).
    lemmas: display forms, case kept, underscores as spaces, e.g. 'Chihuahua'. These
      are the search queries.
    texts: the strings that are embedded (module docstring).
    counts: WordNet's tagged-sense count of each (lemma, synset) pair (how often SemCor
      uses that sense); empty for vocabularies without it.
    lexnames: each synset's lexicographer file, e.g. 'noun.animal'; empty likewise.
  """
  synsets: tuple[str, ...]
  lemmas: tuple[str, ...]
  texts: tuple[str, ...]
  counts: tuple[int, ...] = ()
  lexnames: tuple[str, ...] = ()

  def __post_init__(self):
    if not len(self.synsets) == len(self.lemmas) == len(self.texts):
      raise ValueError(f'Vocabulary fields differ in length: {len(self.synsets)} synsets, '
                       f'{len(self.lemmas)} lemmas, {len(self.texts)} texts.')
    for name in ('counts', 'lexnames'):
      if getattr(self, name) and len(getattr(self, name)) != len(self.texts):
        raise ValueError(f'Vocabulary {name} has {len(getattr(self, name))} entries for '
                         f'{len(self.texts)} concepts.')

  def __len__(self) -> int:
    return len(self.texts)

  def subset(self, indices) -> 'Vocabulary':
    """The concepts at `indices`, in that order (e.g. the label-set pruned vocabulary)."""
    indices = [int(i) for i in indices]
    pick = lambda values: tuple(values[i] for i in indices) if values else ()
    return Vocabulary(pick(self.synsets), pick(self.lemmas), pick(self.texts),
                      pick(self.counts), pick(self.lexnames))

  def common(self, min_count: int) -> 'Vocabulary':
    """The concepts whose lemma-sense WordNet counts at least `min_count` times in its
    sense-tagged corpus (SemCor): a vocabulary of everyday senses, chosen without regard to
    any target (16,816 of 146,347 concepts at min_count=1)."""
    if min_count <= 0:
      return self
    if not self.counts:
      raise ValueError('This vocabulary has no sense counts to filter on.')
    keep = [i for i, c in enumerate(self.counts) if c >= min_count]
    if not keep:
      raise ValueError(f'No concept has a sense count >= {min_count}: WordNet was read '
                       'without its cntlist file (Debian: apt-get install '
                       'wordnet-sense-index).')
    return self.subset(keep)

  def fingerprint(self) -> str:
    """A hash of the concept texts and names: checkpoints store it to refuse a mismatch."""
    digest = hashlib.sha256()
    for s, l, t in zip(self.synsets, self.lemmas, self.texts):
      digest.update(f'{s}\x1f{l}\x1f{t}\x1e'.encode())
    return digest.hexdigest()


def display(name: str) -> str:
  """WordNet lemma name -> display form: underscores become spaces, case is kept."""
  return name.replace('_', ' ')


def concept_text(lemma: str, hypernym: str | None, definition: str) -> str:
  """The embedded text; see the module docstring for the rules."""
  head = lemma if hypernym is None else f'{lemma} ({hypernym})'
  end = '' if definition.endswith(('.', '!', '?')) else '.'
  return f'{head}: {definition}{end}'


def synset_hypernym(synset) -> str | None:
  """First hypernym's first lemma, else the first instance hypernym's; None for roots."""
  parents = synset.hypernyms() or synset.instance_hypernyms()
  return display(parents[0].lemmas()[0].name()) if parents else None


def read_vocabulary(reader) -> Vocabulary:
  """Lists every noun (lemma, synset) pair of an NLTK WordNet reader, in NLTK's order."""
  synsets, lemmas, texts, counts, lexnames = [], [], [], [], []
  for synset in reader.all_synsets('n'):
    hypernym = synset_hypernym(synset)
    definition = synset.definition()
    for lemma in synset.lemmas():
      name = display(lemma.name())
      synsets.append(synset.name())
      lemmas.append(name)
      texts.append(concept_text(name, hypernym, definition))
      counts.append(lemma.count())
      lexnames.append(synset.lexname())
  return Vocabulary(tuple(synsets), tuple(lemmas), tuple(texts), tuple(counts),
                    tuple(lexnames))


def load_vocabulary(cache_dir: str | None = None,
                    source: wordnet.WordNetSource | None = None) -> Vocabulary:
  """The WordNet noun vocabulary, read once and then served from a JSON cache.

  Args:
    cache_dir: where the cache (and, for Debian's WordNet, the reader's copy of the
      database) lives; default `cache.default_cache_dir()`.
    source: a WordNet installation; default `wordnet.find_wordnet()`.

  Returns:
    The vocabulary (146,347 concepts on WordNet 3.0).

  Raises:
    wordnet.WordNetNotFoundError: WordNet 3.0 is not installed.
  """
  cache_dir = cache_dir or cache.default_cache_dir()
  source = source or wordnet.find_wordnet()
  key = hashlib.sha256(f'{_FORMAT}:{source.fingerprint()}'.encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f'vocab-{key}.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
    return Vocabulary(tuple(data['synsets']), tuple(data['lemmas']), tuple(data['texts']),
                      tuple(data['counts']), tuple(data['lexnames']))
  log.info('Reading the WordNet noun vocabulary from %s (once; cached in %s).',
           source.path, path)
  with wordnet.open_wordnet(source, cache_dir) as reader:
    vocab = read_vocabulary(reader)
  data = {'format': _FORMAT, 'source': source.path, 'synsets': list(vocab.synsets),
          'lemmas': list(vocab.lemmas), 'texts': list(vocab.texts),
          'counts': list(vocab.counts), 'lexnames': list(vocab.lexnames)}
  atomic.write(path, lambda f: f.write(json.dumps(data).encode()))
  return vocab


def load_tsv(path: str) -> Vocabulary:
  """A custom vocabulary: one "query<TAB>text" line per concept (offline worlds, tests).

  The query doubles as the concept's name; blank lines are skipped.
  """
  lemmas, texts = [], []
  with open(path, encoding='utf-8') as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      query, sep, text = line.rstrip('\n').partition('\t')
      if not sep or not query.strip() or not text.strip():
        raise ValueError(f'{path}:{line_no}: expected "<query>\\t<text>", got {line!r}.')
      lemmas.append(query.strip())
      texts.append(text.strip())
  if not lemmas:
    raise ValueError(f'{path} holds no concepts.')
  return Vocabulary(tuple(lemmas), tuple(lemmas), tuple(texts))
