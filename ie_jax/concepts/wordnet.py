"""Finding WordNet 3.0 on this machine and opening it with NLTK's reader.

Two installations are recognised, in this order:
  1. NLTK data (`python -m nltk.downloader wordnet`), found through `nltk.data.path`.
  2. Debian's packages `wordnet-base` + `wordnet-sense-index` (`/usr/share/wordnet`). They
     lack the `lexnames` file that NLTK's reader needs, so we copy the database into a
     directory we own and write `lexnames` next to it. Copies rather than links: NLTK 3.10
     refuses symlinks and hard links that point outside the corpus root.
"""
import contextlib
import dataclasses
import hashlib
import os
import shutil
import warnings

from ie_jax.concepts import cache

# NLTK is imported where WordNet is read, not here: its package import pulls in SciPy and
# takes ~1.5 s, which every launch would pay, including those whose vocabulary is a world's.

DEBIAN_DIRS = ('/usr/share/wordnet',)

INSTALL_HINT = (
    'Install WordNet 3.0 with either `sudo apt-get install wordnet-base wordnet-sense-index` '
    '(Debian/Ubuntu) or `python -m nltk.downloader wordnet`.')

# The 45 WordNet 3.0 lexicographer files (lexnames(5WN)): number, name, syntactic
# category (1 noun, 2 verb, 3 adjective, 4 adverb). The number is the list position.
LEXNAMES = (
    'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act', 'noun.animal',
    'noun.artifact', 'noun.attribute', 'noun.body', 'noun.cognition',
    'noun.communication', 'noun.event', 'noun.feeling', 'noun.food', 'noun.group',
    'noun.location', 'noun.motive', 'noun.object', 'noun.person', 'noun.phenomenon',
    'noun.plant', 'noun.possession', 'noun.process', 'noun.quantity', 'noun.relation',
    'noun.shape', 'noun.state', 'noun.substance', 'noun.time', 'verb.body', 'verb.change',
    'verb.cognition', 'verb.communication', 'verb.competition', 'verb.consumption',
    'verb.contact', 'verb.creation', 'verb.emotion', 'verb.motion', 'verb.perception',
    'verb.possession', 'verb.social', 'verb.stative', 'verb.weather', 'adj.ppl')
_CATEGORY = {'noun': 1, 'verb': 2, 'adj': 3, 'adv': 4}

# What NLTK's reader opens to list noun synsets (it scans data.adj for satellites and
# loads every index and exception file at construction).
_REQUIRED_FILES = (
    'data.adj', 'data.adv', 'data.noun', 'data.verb',
    'index.adj', 'index.adv', 'index.noun', 'index.verb',
    'adj.exc', 'adv.exc', 'noun.exc', 'verb.exc')
# Only needed for sense keys and counts; copied when present (wordnet-sense-index).
_OPTIONAL_FILES = ('index.sense', 'cntlist.rev')


class WordNetNotFoundError(FileNotFoundError):
  """No usable WordNet 3.0 installation was found."""


@dataclasses.dataclass(frozen=True)
class WordNetSource:
  """Where WordNet was found.

  Attributes:
    kind: 'nltk' (an NLTK corpus directory or zip) or 'debian' (a WordNet `dict` dir).
    path: the corpus directory or `.../wordnet.zip/wordnet/` pointer for 'nltk', the
      directory holding `data.noun` for 'debian'.
  """
  kind: str
  path: str

  def fingerprint(self) -> str:
    """A content hash of the noun database, to key caches built from it."""
    digest = hashlib.sha256(self.kind.encode())
    zip_end = self.path.find('.zip')
    if zip_end >= 0:
      digest.update(cache.file_sha256(self.path[:zip_end + 4]).encode())
    else:
      for name in ('data.noun', 'index.noun'):
        digest.update(cache.file_sha256(os.path.join(self.path, name)).encode())
    return digest.hexdigest()


def lexnames_text() -> str:
  """The WordNet 3.0 `lexnames` file: `NN<TAB>name<TAB>category` per line."""
  return ''.join(f'{i:02d}\t{name}\t{_CATEGORY[name.split(".")[0]]}\n'
                 for i, name in enumerate(LEXNAMES))


def find_wordnet(nltk_paths: list[str] | None = None,
                 debian_dirs: tuple[str, ...] = DEBIAN_DIRS) -> WordNetSource:
  """Locates WordNet: NLTK data first, then Debian's files.

  Args:
    nltk_paths: directories to search for `corpora/wordnet[.zip]`; default `nltk.data.path`.
    debian_dirs: directories that may hold Debian's WordNet database files.

  Returns:
    The first installation found.

  Raises:
    WordNetNotFoundError: nothing usable was found; the message lists where we looked
      and how to install it.
  """
  import nltk  # pylint: disable=g-import-not-at-top
  searched = list(nltk.data.path if nltk_paths is None else nltk_paths)
  try:
    pointer = nltk.data.find('corpora/wordnet', paths=searched)
    return WordNetSource('nltk', str(pointer.path if hasattr(pointer, 'path') else pointer))
  except LookupError:
    pass
  incomplete = []
  for directory in debian_dirs:
    missing = [f for f in _REQUIRED_FILES if not os.path.isfile(os.path.join(directory, f))]
    if not missing:
      return WordNetSource('debian', directory)
    if len(missing) < len(_REQUIRED_FILES):
      incomplete.append(f'{directory} (missing {", ".join(missing)})')
  where = ', '.join(f'{p}/corpora/wordnet' for p in searched)
  where += '; ' + ', '.join(debian_dirs)
  detail = f' Incomplete installations: {"; ".join(incomplete)}.' if incomplete else ''
  raise WordNetNotFoundError(f'WordNet 3.0 not found (searched {where}).{detail} '
                             f'{INSTALL_HINT}')


def _wordnet30_reader(pointer):
  """NLTK's reader without the cross-version synset mapping.

  NLTK maps every non-'wordnet' version onto its own 'wordnet' corpus for the multilingual
  functions, which would require the NLTK download we are trying to do without. We read
  3.0 itself, for which that mapping is the identity.
  """
  from nltk.corpus.reader.wordnet import WordNetCorpusReader  # pylint: disable=g-import-not-at-top

  class WordNet30Reader(WordNetCorpusReader):

    def map_wn(self, version='wordnet'):
      del version
      return None

  return WordNet30Reader(pointer, None)


def _debian_corpus_copy(source: WordNetSource, cache_dir: str) -> str:
  """Copies Debian's files plus our `lexnames` into `cache_dir`; reuses a finished copy."""
  root = os.path.join(cache_dir, f'wordnet-{source.fingerprint()[:16]}')
  done = os.path.join(root, '.complete')
  if os.path.exists(done):
    return root
  os.makedirs(root, exist_ok=True)
  for name in _REQUIRED_FILES + _OPTIONAL_FILES:
    src = os.path.join(source.path, name)
    if os.path.isfile(src):
      shutil.copyfile(src, os.path.join(root, name))
  with open(os.path.join(root, 'lexnames'), 'w', encoding='utf-8') as f:
    f.write(lexnames_text())
  open(done, 'w').close()
  return root


@contextlib.contextmanager
def _nltk_may_read(directory: str):
  """Temporarily lets NLTK's path sandbox (3.10+) open files under `directory`."""
  import nltk  # pylint: disable=g-import-not-at-top
  added = directory not in nltk.data.path
  if added:
    nltk.data.path.append(directory)
  try:
    yield
  finally:
    if added:
      nltk.data.path.remove(directory)


@contextlib.contextmanager
def open_wordnet(source: WordNetSource, cache_dir: str | None = None):
  """Yields an NLTK WordNet reader for `source`; use it inside the `with` block only.

  The reader opens data files lazily, and NLTK only allows that while the corpus directory
  is on its data path, which we restore on exit.

  Raises:
    WordNetNotFoundError: the files are not WordNet 3.0.
  """
  if source.kind == 'debian':
    root = _debian_corpus_copy(source, cache_dir or cache.default_cache_dir())
  else:
    root = source.path
  zip_end = root.find('.zip')
  allowed = os.path.dirname(root[:zip_end + 4]) if zip_end >= 0 else root
  import nltk  # pylint: disable=g-import-not-at-top
  with _nltk_may_read(os.path.realpath(allowed)):
    pointer = nltk.data.FileSystemPathPointer(root) if zip_end < 0 else nltk.data.find(
        'corpora/wordnet', paths=[os.path.dirname(allowed)])
    with warnings.catch_warnings():
      # "The multilingual functions are not available": we do not use them.
      warnings.simplefilter('ignore', UserWarning)
      reader = _wordnet30_reader(pointer)
    version = reader.get_version()
    if version != '3.0':
      raise WordNetNotFoundError(
          f'{source.path} holds WordNet {version}; the paper\'s 146,347 concepts are '
          f'WordNet 3.0. {INSTALL_HINT}')
    yield reader
