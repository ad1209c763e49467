"""The embedded demo world: an offline "web" of openly licensed emoji and icons, and a
target of Microsoft Fluent emoji, built to design/OFFLINE_WORLD.md's principles (Design B
revised): the target's own rendering family is in the web, no target image is, and the
target's test emoji are nowhere in it.

  python -m ie_jax.worlds build demo [--cache DIR] [--out DIR]

Everything comes from npm packages, fetched with `npm pack` at pinned versions and
checksums (`packages.py`), rendered with resvg:

* **target** (`target/{train,test}/<class>/`): Fluent Flat renders of the emoji in twelve
  animal, plant, food and drink subgroups of Unicode's CLDR grouping (`objects`: twelve
  object, travel and activity subgroups). Each class's emoji are split by a hash: a third
  to train, a third to test, a third to the web only.
* **web** (`corpus/`, a local-engine corpus), captioned with CLDR names and keywords:
  - the emoji of nine other design families (Twemoji, Noto, Noto v1, OpenMoji, EmojiOne 2,
    EmojiOne 1, EmojiOne mono, FxEmoji, Streamline), less the target's test emoji;
  - the target's own family: Fluent Flat renders of every emoji that is not a target
    image (the web-only third of the target's classes and every other emoji), and the
    Fluent color and high-contrast renders of every emoji but the test ones. So "a thing
    of the target's kind, drawn like the target" exists in the web, as web photos of
    daisies exist for Flowers-102;
  - Material Design Icons and game-icons.net silhouettes as distractors, captioned with
    their icon names.
  Emoji icons that cannot be tied to an emoji are left out (their ground truth would be
  unknown).
* **ground truth** (`ground_truth.json`, for scoring only; the explorer never reads it):
  for each web image, the target class of what it shows (its CLDR subgroup), or '' for
  none, with its subgroup, style and kind. An icon counts when its name is an emoji's CLDR
  name.
* `NOTICE`: every package, version, licence and attribution.

The build happens in `<out>.partial/` and is renamed into place when complete, so a world
directory that exists is whole. An interrupted build resumes: fetched packages stay in the
cache and each finished style's renders are kept. A directory this builder did not write
is never deleted or overwritten (`world_format.check_buildable`).
"""
import collections
import hashlib
import json
import logging
import os
import shutil

import tqdm

from ie_jax.concepts import cache
from ie_jax.utils import atomic
from ie_jax.worlds import emoji as emoji_lib
from ie_jax.worlds import iconify, packages, world_format

log = logging.getLogger(__name__)

# 2: the world format's manifest, a 'class' per ground-truth image. 3: the target's own
# rendering family is in the web (design/OFFLINE_WORLD.md, Design B revised).
VERSION = 3
BUILDER = __name__
IMAGE_SIZE = 64
P = packages.Package
CATALOGUE = P('emojibase-data', '17.0.0', 'sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA==', 'MIT', 'Milles J. (emojibase), Unicode CLDR')  # pylint: disable=line-too-long
# style name -> package. Emoji styles first, then distractor icon sets.
WEB_EMOJI = {
    'twemoji': P('@iconify-json/twemoji', '1.2.5', 'sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw==', 'CC-BY-4.0', 'Twitter, Inc and other contributors (Twemoji)'),  # pylint: disable=line-too-long
    'noto': P('@iconify-json/noto', '1.2.9', 'sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw==', 'Apache-2.0', 'Google Inc (Noto Emoji)'),  # pylint: disable=line-too-long
    'noto_v1': P('@iconify-json/noto-v1', '1.2.5', 'sha512-/DsVMius69Q0fRS53z7QK1TROSuar606jiIx+laXtdsYGMXpf6LtHBx6CGfoo3UHHb/XpBsw+1L1x3eyPqMuVA==', 'Apache-2.0', 'Google Inc (Noto Emoji v1)'),  # pylint: disable=line-too-long
    'openmoji': P('@iconify-json/openmoji', '1.2.29', 'sha512-vXdhkqcXVSO6suy+m9LbcUM3OdVyuNOtpV8/als/WqfkQIRxevL5Geb/g+6GH/Qwnq1OqksEmaDGTCmZ5nFKJQ==', 'CC-BY-SA-4.0', 'OpenMoji (HfG Schwaebisch Gmuend)'),  # pylint: disable=line-too-long
    'emojione': P('@iconify-json/emojione', '1.2.3', 'sha512-T9+T3HIbJNLKKsmxYKlaYhvnHYkz/HNYTV7SHCXVZPfeUi4FqskY70YeN8yYAZT8cCv7w5vJxS4Q1m8zb9CMMg==', 'CC-BY-4.0', 'Emoji One (EmojiOne 2)'),  # pylint: disable=line-too-long
    'emojione_v1': P('@iconify-json/emojione-v1', '1.2.3', 'sha512-UjI2VQEXVtGlPBvQuxEizro7QCgBcJDOYwKUupquvvZ8UV4xOlvm45IU82JYWegiAWLerY79gFLMZ26U6Ms+ww==', 'CC-BY-SA-4.0', 'Emoji One (EmojiOne 1)'),  # pylint: disable=line-too-long
    'emojione_mono': P('@iconify-json/emojione-monotone', '1.2.1', 'sha512-cZSNcPsuiAD6HCzCh/2dYKGh3pNI0jJlxBxQWfC33cQsPtqYZqulGBvlkThXYNvDl8VxgVHT9u+izyX/yeEIkA==', 'CC-BY-4.0', 'Emoji One (monotone)'),  # pylint: disable=line-too-long
    'fxemoji': P('@iconify-json/fxemoji', '1.2.2', 'sha512-UAasRaxzFUKfIGSmLwnoarsssA4LX0VLLuEmplIqM6ZNQqIQRtav8tZ4H1neTlBreXuMQyAifr5jP4kn78DpiQ==', 'Apache-2.0', 'Mozilla (Firefox OS Emoji)'),  # pylint: disable=line-too-long
    'streamline': P('@iconify-json/streamline-emojis', '1.2.4', 'sha512-iNr9T9XuZVTyQPJO8ZlLxBzPkpi7qMl+z1l0C31vpEMqhPMelth3n7CeWQYtixdetDPdI81yeG4ROqjWpYJE6A==', 'CC-BY-4.0', 'Streamline (streamlinehq.com)'),  # pylint: disable=line-too-long
}
WEB_ICONS = {
    'mdi': P('@iconify-json/mdi', '1.2.3', 'sha512-O3cLwbDOK7NNDf2ihaQOH5F9JglnulNDFV7WprU2dSoZu3h3cWH//h74uQAB87brHmvFVxIOkuBX2sZSzYhScg==', 'Apache-2.0', 'Pictogrammers (Material Design Icons)'),  # pylint: disable=line-too-long
    'game_icons': P('@iconify-json/game-icons', '1.2.4', 'sha512-/HDDZxowXgDJcOEwPspUCq5RuDdl25OyZKdtxqqiPJQNTrWIym7r4StLzIVs77DyNzOWWhH5wDqwYR3WHeDfkg==', 'CC-BY-3.0', 'game-icons.net contributors (Lorc, Delapouite and others)'),  # pylint: disable=line-too-long
}
TARGET = P('@iconify-json/fluent-emoji-flat', '1.2.6', 'sha512-RY47RgPb47fYUiyrA64sIOL0+UU02s29sXpNBbIQRBUlPlfNFTKUmZDERGuxDs/7yNGWqQYvuaSYM1M4fRXlUw==', 'MIT', 'Microsoft Corporation (Fluent Emoji)')  # pylint: disable=line-too-long
# The target's rendering family, in the web too (Design B revised): its own style for
# everything that is not a target image, and its sibling styles for everything but the
# target's test emoji.
FLUENT_COLOR = P('@iconify-json/fluent-emoji', '1.2.7', 'sha512-D8G6bKAyIsyxP1rzZtIWr/gg/fO4Rg1+DyCWlfqKK4h8W+4Em/Y0P6QYgJUQTlUcagzJvSyg+9OBv4hz4Hc/QA==', 'MIT', 'Microsoft Corporation (Fluent Emoji, color)')  # pylint: disable=line-too-long
FLUENT_HIGH_CONTRAST = P('@iconify-json/fluent-emoji-high-contrast', '1.2.6', 'sha512-esqhZPpkrF7sNX3NsLoh8KW64okEr/bzko7WNnFP+qTJGAqDPDYjp0925yxuivXy3HtVQB8xhIKu3+Nq1byX5w==', 'MIT', 'Microsoft Corporation (Fluent Emoji, high contrast)')  # pylint: disable=line-too-long
# The target's classes: the animal, plant, food and drink subgroups with >= 12 emoji,
# subgroup -> class name (the folder name, and the query of the label-set modes).
TARGET_CLASSES = {
    'animal-mammal': 'mammal', 'animal-bird': 'bird', 'animal-marine': 'marine animal',
    'animal-bug': 'bug', 'plant-flower': 'flower', 'plant-other': 'plant',
    'food-fruit': 'fruit', 'food-vegetable': 'vegetable', 'food-prepared': 'prepared food',
    'food-asian': 'asian food', 'food-sweet': 'sweet', 'drink': 'drink'}
TARGET_SUBGROUPS = tuple(TARGET_CLASSES)
# A second target of other classes, in the same web (the 'objects' world): man-made things,
# travel and activity subgroups with >= 12 emoji.
OBJECT_CLASSES = {
    'transport-ground': 'ground vehicle', 'transport-air': 'aircraft',
    'place-building': 'building', 'clothing': 'clothing', 'office': 'office supply',
    'sport': 'sports equipment', 'tool': 'tool', 'household': 'household item',
    'book-paper': 'book or paper', 'musical-instrument': 'musical instrument',
    'game': 'game', 'computer': 'computer'}
_STAGING_MARKER = '.ie_jax_build'


class WorldBuildError(RuntimeError):
  """The world could not be built; the message says which input failed and how."""


def _stamp_ok(directory: str, name: str) -> bool:
  try:
    stamp = world_format.read_manifest(directory)
  except world_format.WorldError:
    return False
  return bool(stamp) and stamp.get('builder') == BUILDER and \
      stamp.get('version') == VERSION and stamp.get('name') == name


def _paths(directory: str) -> dict:
  return {'corpus': os.path.join(directory, 'corpus'),
          'target': os.path.join(directory, 'target'),
          'ground_truth': os.path.join(directory, 'ground_truth.json')}


def _write_json(path: str, data) -> None:
  atomic.write(path, lambda f: f.write(json.dumps(data).encode()))


def _caption(e: emoji_lib.Emoji) -> str:
  # Names and keywords only: the subgroup is the target's label and stays out of the text.
  tags = [t for t in e.tags if t.lower() != e.label.lower()]
  return e.label + (': ' + ', '.join(tags) if tags else '')


def _render_style(style: str, icon_set, items: list, staging: str, progress: bool) -> dict:
  """Renders (name, caption, subgroup) items of one style; returns its counts.

  The style's rows file is written last, so its presence marks the style done.
  """
  rows_path = os.path.join(staging, 'rows', f'{style}.jsonl')
  if os.path.exists(rows_path):
    with open(rows_path, encoding='utf-8') as f:
      return {'images': sum(1 for _ in f), 'resumed': True}
  image_dir = os.path.join(staging, 'corpus', 'images', style)
  os.makedirs(image_dir, exist_ok=True)
  rows, failed = [], collections.Counter()
  for i, (name, caption, subgroup) in enumerate(tqdm.tqdm(
      items, desc=f'render {style}', unit='icon', disable=not progress)):
    try:
      image = iconify.render(icon_set.svg(icon_set.resolve(name)), IMAGE_SIZE)
    except iconify.RenderError as e:
      failed[str(e)[:60]] += 1
      continue
    rel = f'images/{style}/{i:05d}.png'  # our own numbering: never a name from a package
    image.save(os.path.join(staging, 'corpus', rel), optimize=False)
    rows.append({'file': rel, 'caption': caption, 'subgroup': subgroup, 'style': style})
  if failed:
    log.warning('%s: %d icons failed to render (%s).', style, sum(failed.values()),
                dict(failed.most_common(3)))
  tmp = rows_path + '.tmp'
  os.makedirs(os.path.dirname(rows_path), exist_ok=True)
  with open(tmp, 'w', encoding='utf-8') as f:
    for row in rows:
      f.write(json.dumps(row) + '\n')
  os.replace(tmp, rows_path)
  return {'images': len(rows), 'render_failures': sum(failed.values())}


def _split(keys: list[str]) -> tuple[list, list, list]:
  """A third of a class's emoji to the target's train split, a third to its test split,
  a third to the web only (other members of the class, drawn like the target), by a hash
  (stable across runs)."""
  ordered = sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
  return ordered[0::3], ordered[1::3], ordered[2::3]


def _target_split(catalogue, icon_set, target_classes: dict) -> dict:
  """emoji key -> 'train' | 'test' | 'web' for the target classes' emoji in the target set."""
  matched = emoji_lib.match_icons(catalogue, icon_set)
  out = {}
  for subgroup in target_classes:
    keys = [e.key for e in catalogue if e.subgroup == subgroup and e.key in matched]
    for split, split_keys in zip(('train', 'test', 'web'), _split(keys)):
      out.update({key: split for key in split_keys})
  return out


def build(directory: str, *, cache_dir: str | None = None, web_emoji=None, web_icons=None,
          catalogue: packages.Package = CATALOGUE, target: packages.Package = TARGET,
          target_family=None, target_classes=None, name: str = 'demo',
          progress: bool = True) -> dict:
  """Builds the world into `directory` (once; a complete world is reused).

  Args:
    directory: the world's directory.
    cache_dir: where npm packages are kept (default: the ie_jax cache's packages/).
    web_emoji, web_icons: style -> Package overrides (a small slice for tests).
    catalogue, target: the emoji catalogue and target packages (overridable for tests).
    target_family: style -> Package of the target's rendering family in the web (default:
      the target's own style, Fluent color and Fluent high contrast). The target's own
      package renders everything but the target images; the others everything but the
      target's test emoji.
    target_classes: CLDR subgroup -> class name of the target (default TARGET_CLASSES).
    name: recorded in the stamp; a directory holding another world of this builder is
      rebuilt, one holding anything else is left alone (WorldError).
    progress: show progress bars.

  Returns:
    Paths: 'corpus', 'target', 'ground_truth'.

  Raises:
    WorldBuildError: a package could not be fetched, failed its checksum, changed layout,
      or nothing could be rendered.
    world_format.WorldError: `directory` (or its staging twin) holds something this
      builder did not write.
  """
  paths = _paths(directory)
  if _stamp_ok(directory, name):
    return paths
  world_format.check_buildable(directory, BUILDER)
  target_classes = dict(TARGET_CLASSES if target_classes is None else target_classes)
  web_emoji = WEB_EMOJI if web_emoji is None else web_emoji
  web_icons = WEB_ICONS if web_icons is None else web_icons
  if target_family is None:
    target_family = {'fluent_flat': target, 'fluent_color': FLUENT_COLOR,
                     'fluent_high_contrast': FLUENT_HIGH_CONTRAST}
  emoji_styles = {**web_emoji, **target_family}
  cache_dir = cache_dir or os.path.join(cache.default_cache_dir(), 'packages')
  staging = directory.rstrip('/') + '.partial'
  marker = os.path.join(staging, _STAGING_MARKER)
  # Ours: the marker, or only what an interrupted build of an older version left.
  if os.path.isdir(staging) and not os.path.exists(marker) and \
      not set(os.listdir(staging)) <= {'corpus', 'rows', 'target'}:
    raise world_format.WorldError(
        f'{staging} exists and is not an unfinished ie-jax build; move it away (the world '
        f'is built there before it is renamed to {directory}).')
  stamp = f'{BUILDER} {name} {VERSION}\n'
  if os.path.exists(marker) and open(marker, encoding='utf-8').read() != stamp:  # pylint: disable=consider-using-with
    shutil.rmtree(staging)  # our own unfinished build of another world or version
  os.makedirs(os.path.join(staging, 'corpus'), exist_ok=True)
  with open(marker, 'w', encoding='utf-8') as f:
    f.write(stamp)
  log.info('Building the %r world in %s (packages cached in %s).', name, directory, cache_dir)
  try:
    catalogue_package = catalogue
    catalogue = emoji_lib.load(catalogue_package, packages.fetch(catalogue_package, cache_dir))
    by_key = {e.key: e for e in catalogue}
    by_label = {emoji_lib.slug(e.label): e for e in catalogue}
    split = _target_split(catalogue, iconify.load(target, packages.fetch(target, cache_dir)),
                          target_classes)
    stats = {}
    for style, package in {**emoji_styles, **web_icons}.items():
      icon_set = iconify.load(package, packages.fetch(package, cache_dir))
      if style in emoji_styles:
        # No rendering of a target test emoji anywhere in the web; no target image either.
        banned = {'test'} | ({'train'} if package == target else set())
        matched = emoji_lib.match_icons(catalogue, icon_set)
        items = [(icon, _caption(by_key[key]), by_key[key].subgroup)
                 for key, icon in sorted(matched.items()) if split.get(key) not in banned]
      else:
        items = []
        for icon in icon_set.names():
          twin = by_label.get(icon)  # an icon named exactly like an emoji shows that thing
          items.append((icon, icon.replace('-', ' '), twin.subgroup if twin else ''))
      stats[style] = _render_style(style, icon_set, items, staging, progress)
    target_stats = _build_target(catalogue, target, target_classes, split, cache_dir,
                                 staging, progress)
  except (packages.PackageError, OSError) as e:
    raise WorldBuildError(f'Building the {name!r} world stopped: {e} Run the same command '
                          'again to resume; fetched packages and finished styles are '
                          'kept.') from e
  used = list({p.spec: p for p in [catalogue_package, *emoji_styles.values(),
                                    *web_icons.values(), target]}.values())
  _finish(staging, directory, name, used, list({**emoji_styles, **web_icons}),
          list(web_icons), target_classes, stats, target_stats)
  return paths


def _build_target(catalogue, target, target_classes: dict, split: dict, cache_dir: str,
                  staging: str, progress: bool) -> dict:
  icon_set = iconify.load(target, packages.fetch(target, cache_dir))
  matched = emoji_lib.match_icons(catalogue, icon_set)
  counts = collections.Counter({'web_only': sum(s == 'web' for s in split.values())})
  for subgroup in target_classes:
    keys = [e.key for e in catalogue if e.subgroup == subgroup and e.key in matched]
    for part in ('train', 'test'):  # the same split as the web's
      part_keys = [k for k in keys if split.get(k) == part]
      out = os.path.join(staging, 'target', part, target_classes[subgroup])
      os.makedirs(out, exist_ok=True)
      for i, key in enumerate(tqdm.tqdm(part_keys, desc=f'target {part} {subgroup}',
                                        disable=not progress, leave=False)):
        path = os.path.join(out, f'{i:04d}.png')
        if not os.path.exists(path):
          image = iconify.render(icon_set.svg(icon_set.resolve(matched[key])), IMAGE_SIZE)
          image.save(path + '.tmp.png')
          os.replace(path + '.tmp.png', path)
        counts[part] += 1
  if not counts['train'] or not counts['test']:
    raise packages.PackageError(f'{target.spec}: no emoji of the target classes rendered.')
  return dict(counts)


def _finish(staging: str, directory: str, name: str, used: list, web: list, icons: list,
            target_classes: dict, stats: dict, target_stats: dict) -> None:
  rows = []
  for style in web:
    with open(os.path.join(staging, 'rows', f'{style}.jsonl'), encoding='utf-8') as f:
      rows.extend(json.loads(line) for line in f)
  if not rows:
    raise WorldBuildError(f'The {name!r} world has no web images: nothing rendered.')
  with open(os.path.join(staging, 'corpus', 'captions.jsonl.tmp'), 'w',
            encoding='utf-8') as f:
    for row in rows:
      f.write(json.dumps({'file': row['file'], 'caption': row['caption']}) + '\n')
  os.replace(os.path.join(staging, 'corpus', 'captions.jsonl.tmp'),
             os.path.join(staging, 'corpus', 'captions.jsonl'))
  # Relevance is the class of what an image shows (its CLDR subgroup), never its style.
  _write_json(os.path.join(staging, 'ground_truth.json'), {
      'classes': list(target_classes.values()),
      'images': {row['file']: {'class': target_classes.get(row['subgroup'], ''),
                               'subgroup': row['subgroup'], 'style': row['style'],
                               'kind': 'icon' if row['style'] in icons else 'emoji'}
                 for row in rows}})
  relevant = sum(row['subgroup'] in target_classes for row in rows)
  with open(os.path.join(staging, 'NOTICE'), 'w', encoding='utf-8') as f:
    f.write(f'The ie-jax {name!r} world is rendered from these npm packages. The images '
            'keep their licences; attribution below.\n\n')
    for package in used:
      f.write(f'{package.spec}\n  licence: {package.license}\n  by: {package.attribution}\n'
              f'  integrity: {package.integrity}\n\n')
    f.write('CC-BY-SA-4.0 images (OpenMoji, EmojiOne 1) and renders derived from them are '
            'shared under the same licence.\n')
  shutil.rmtree(os.path.join(staging, 'rows'))
  os.remove(os.path.join(staging, _STAGING_MARKER))
  _write_json(os.path.join(staging, 'world.json'), {
      'format': world_format.FORMAT, 'builder': BUILDER, 'version': VERSION, 'name': name,
      'web_images': len(rows), 'web_relevant': relevant, 'styles': stats,
      'target': target_stats, 'target_classes': target_classes})
  if os.path.exists(directory):
    # Checked again here, just before the only delete: an older world of ours, replaced
    # whole; never anything else.
    world_format.check_buildable(directory, BUILDER)
    shutil.rmtree(directory)
  os.replace(staging, directory)
  log.info('World %r: %d web images (%d in target classes), target %s.', name, len(rows),
           relevant, target_stats)
