"""The emoji catalogue (emojibase-data): CLDR names, keywords and Unicode subgroups.

Emoji are keyed by code points: upper-case hex, joined by '-', with the FE0F variation
selector dropped and leading zeros stripped, so that emojibase's '2764-FE0F' and an icon
set's '2764' meet. Skin-tone variants are nested in emojibase and left out: one picture per
emoji per style.
"""
import dataclasses
import re
import unicodedata

from ie_jax.worlds import packages


@dataclasses.dataclass(frozen=True)
class Emoji:
  key: str          # normalised code points, e.g. '1F436'
  label: str        # CLDR short name, e.g. 'dog face'
  tags: tuple       # CLDR keywords
  group: str        # e.g. 'animals-nature'
  subgroup: str     # e.g. 'animal-mammal'


def normalise(codepoints: str) -> str:
  parts = [p.upper().lstrip('0') for p in re.split(r'[-_ ]', codepoints.strip()) if p]
  return '-'.join(p for p in parts if p != 'FE0F')


def slug(text: str) -> str:
  """Iconify's naming of emoji: ASCII, lower case, '&' as 'and', runs of others as '-'."""
  text = unicodedata.normalize('NFKD', text).encode('ascii', 'ignore').decode()
  text = text.lower().replace('&', 'and')
  return re.sub(r'[^a-z0-9]+', '-', text).strip('-')


def load(package: packages.Package, root: str) -> list[Emoji]:
  """Every base emoji of emojibase-data's English data, components excluded."""
  data = packages.read_json(root, 'en/data.json', package)
  groups = packages.read_json(root, 'meta/groups.json', package)
  try:
    group_names, subgroup_names = groups['groups'], groups['subgroups']
    out = []
    for row in data:
      group = group_names[str(row['group'])] if 'group' in row else ''
      if group in ('', 'component'):
        continue  # skin tones, hair styles and regional indicators
      out.append(Emoji(normalise(row['hexcode']), str(row['label']),
                       tuple(str(t) for t in row.get('tags', ())), group,
                       subgroup_names[str(row['subgroup'])]))
  except (KeyError, TypeError) as e:
    raise packages.PackageError(f'{package.spec}: unexpected data layout ({e!r}); this '
                                'world builder expects the pinned version.') from e
  if not out:
    raise packages.PackageError(f'{package.spec}: en/data.json lists no emoji.')
  return out


def match_icons(catalogue: list[Emoji], icon_set) -> dict[str, str]:
  """emoji key -> icon name in `icon_set`, by code point where the set maps them, else by
  the slug of the CLDR label (the sets without `chars.json` name icons that way)."""
  by_key = {e.key: e for e in catalogue}
  out = {}
  for codepoints, name in icon_set.chars.items():
    key = normalise(codepoints)
    if key in by_key and key not in out and icon_set.resolve(name) is not None:
      out[key] = name
  if out:
    return out
  for e in catalogue:
    name = slug(e.label)
    if icon_set.resolve(name) is not None:
      out[e.key] = name
  return out
