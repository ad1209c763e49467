"""Iconify JSON icon sets (`@iconify-json/*` on npm): read, resolve names, render to PNG.

An icon set's `icons.json` maps names to SVG bodies; its `aliases` map extra names to a
parent icon; `chars.json` maps code points ('1f436', joined by '-') to names. Rendering
wraps a body in an `<svg>` with the icon's view box and rasterises it with resvg (the
`resvg-py` wheel, no system libraries), then flattens it on white.
"""
import dataclasses
import io

from PIL import Image

from ie_jax.worlds import packages

_TRANSFORMS = ('rotate', 'hFlip', 'vFlip')


class RenderError(ValueError):
  """An icon's SVG could not be rendered."""


@dataclasses.dataclass
class IconSet:
  package: packages.Package
  icons: dict      # name -> icon object (body, optional box)
  aliases: dict    # name -> {'parent': ...}
  chars: dict      # code point key -> name
  width: int
  height: int
  left: int
  top: int

  def names(self) -> list[str]:
    """Every renderable icon name (hidden icons, kept only for old names, excluded)."""
    return sorted(n for n, icon in self.icons.items() if not icon.get('hidden'))

  def resolve(self, name: str) -> dict | None:
    """The icon object for `name` (through a plain alias); None if unknown or transformed.

    Transformed aliases and icons (rotated or flipped copies) are skipped: they repeat
    another icon's picture.
    """
    seen = set()
    while name in self.aliases and name not in seen:
      seen.add(name)
      alias = self.aliases[name]
      if any(alias.get(t) for t in _TRANSFORMS):
        return None
      name = alias.get('parent', '')
    icon = self.icons.get(name)
    if not isinstance(icon, dict) or not isinstance(icon.get('body'), str) or \
        any(icon.get(t) for t in _TRANSFORMS):
      return None
    return icon

  def svg(self, icon: dict) -> str:
    box = [icon.get(k, default) for k, default in
           (('left', self.left), ('top', self.top), ('width', self.width),
            ('height', self.height))]
    return ('<svg xmlns="http://www.w3.org/2000/svg" '
            'xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{" ".join(map(str, box))}">{icon["body"]}</svg>')


def load(package: packages.Package, root: str) -> IconSet:
  data = packages.read_json(root, 'icons.json', package)
  if not isinstance(data, dict) or not isinstance(data.get('icons'), dict):
    raise packages.PackageError(f'{package.spec}: icons.json has no "icons" object.')
  try:
    chars = packages.read_json(root, 'chars.json', package)
  except packages.PackageError:
    chars = {}
  return IconSet(package, data['icons'], data.get('aliases') or {},
                 chars if isinstance(chars, dict) else {},
                 int(data.get('width', 16)), int(data.get('height', 16)),
                 int(data.get('left', 0)), int(data.get('top', 0)))


def render(svg: str, size: int) -> Image.Image:
  """An RGB `size` x `size` picture of `svg` on white (its aspect ratio kept, centred)."""
  import resvg_py  # pylint: disable=g-import-not-at-top
  try:
    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size,
                                skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(png))) as im:
      im.load()
      rgba = im.convert('RGBA')
  except (ValueError, OSError) as e:
    raise RenderError(str(e)) from e
  if rgba.getbbox() is None or rgba.getchannel('A').getextrema()[1] == 0:
    raise RenderError('the picture is empty')
  if rgba.size != (size, size):
    rgba.thumbnail((size, size))
  canvas = Image.new('RGBA', (size, size), (255, 255, 255, 255))
  canvas.alpha_composite(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2))
  return canvas.convert('RGB')
