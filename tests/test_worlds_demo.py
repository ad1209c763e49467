"""The demo world builder on packages made here, served by a stand-in `npm` on PATH.

The stand-in speaks npm's `pack --json --pack-destination` interface, so the builder's real
path runs: fetch, checksum, unpack, join, render, split, ground truth, atomic finish.
(`test_worlds_slice.py` runs the real npm against the registry.)
"""
import io
import json
import os
import stat
import sys
import tarfile

import numpy as np
from PIL import Image
import pytest

from ie_jax.data import target as target_lib
from ie_jax.worlds import demo_world, emoji, iconify, packages, scoring

SQUARE = '<rect x="2" y="2" width="12" height="12" fill="{}"/>'
CATALOGUE = [  # emojibase rows: two target classes and one other
    {'label': 'dog face', 'hexcode': '1F436', 'tags': ['dog', 'pet'], 'group': 1, 'subgroup': 0},
    {'label': 'cat', 'hexcode': '1F408', 'tags': ['pet'], 'group': 1, 'subgroup': 0},
    {'label': 'cow', 'hexcode': '1F404', 'tags': ['farm'], 'group': 1, 'subgroup': 0},
    {'label': 'red apple', 'hexcode': '1F34E', 'tags': ['fruit'], 'group': 2, 'subgroup': 1},
    {'label': 'pear', 'hexcode': '1F350', 'tags': ['fruit'], 'group': 2, 'subgroup': 1},
    {'label': 'grapes', 'hexcode': '1F347', 'tags': ['fruit'], 'group': 2, 'subgroup': 1},
    {'label': 'red heart', 'hexcode': '2764-FE0F', 'tags': ['love'], 'group': 3, 'subgroup': 2},
    {'label': 'light skin tone', 'hexcode': '1F3FB', 'group': 0, 'subgroup': 3},
]
GROUPS = {'groups': {'0': 'component', '1': 'animals-nature', '2': 'food-drink',
                     '3': 'smileys-emotion'},
          'subgroups': {'0': 'animal-mammal', '1': 'food-fruit', '2': 'heart',
                        '3': 'skin-tone'}}
COLOURS = ['#a52', '#2a5', '#25a', '#aa2', '#a2a', '#2aa', '#d11']


def _tgz(files: dict) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    for name, data in files.items():
      raw = data if isinstance(data, bytes) else json.dumps(data).encode()
      info = tarfile.TarInfo('package/' + name)
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  return buf.getvalue()


def _icon_set(names: dict, chars: dict | None = None, bad: tuple = ()) -> dict:
  icons = {n: {'body': SQUARE.format(COLOURS[i % len(COLOURS)])} for i, n in enumerate(names)}
  for n in bad:
    icons[n] = {'body': '<g>'}  # renders nothing
  return {'icons.json': {'prefix': 'x', 'width': 16, 'height': 16, 'icons': icons,
                         'aliases': {'doggy': {'parent': 'dog-face'}}},
          'chars.json': chars or {}}


class Registry:
  """Tarballs by spec, and a stand-in `npm` that packs them."""

  def __init__(self, tmp_path, monkeypatch):
    self.dir = tmp_path / 'registry'
    self.dir.mkdir()
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    npm = bin_dir / 'npm'
    npm.write_text(f"""#!{sys.executable}
import json, os, shutil, sys
args = sys.argv[1:]
spec, dest = args[1], args[args.index('--pack-destination') + 1]
name = spec.lstrip('@').replace('/', '-').replace('@', '-') + '.tgz'
src = os.path.join({str(self.dir)!r}, name)
if not os.path.exists(src):
  sys.stderr.write('npm error 404 Not Found - ' + spec)
  sys.exit(1)
shutil.copy(src, os.path.join(dest, name))
print(json.dumps([{{'filename': name}}]))
""")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')

  def publish(self, name: str, files: dict, version: str = '1.0.0') -> packages.Package:
    data = _tgz(files)
    path = self.dir / (name.lstrip('@').replace('/', '-') + f'-{version}.tgz')
    path.write_bytes(data)
    return packages.Package(name, version, packages.sri_sha512(str(path)), 'MIT', 'tests')


@pytest.fixture
def world_packages(tmp_path, monkeypatch):
  reg = Registry(tmp_path, monkeypatch)
  cat = reg.publish('emojibase-data', {'en/data.json': CATALOGUE, 'meta/groups.json': GROUPS})
  # By code point (one a plain alias) and by CLDR-name slug (no chars.json).
  web_a = reg.publish('@x/web-a', _icon_set(
      ['dog-face', 'cat', 'cow', 'red-apple', 'pear', 'red-heart'],
      {'1f436': 'doggy', '1f408': 'cat', '1f404': 'cow', '1f34e': 'red-apple',
       '1f350': 'pear', '2764-fe0f': 'red-heart'}))
  web_b = reg.publish('@x/web-b', _icon_set(['dog-face', 'grapes', 'unrelated-icon'],
                                            bad=('red-heart',)))
  icons = reg.publish('@x/icons', _icon_set(['cat', 'gear', 'home']))
  target = reg.publish('@x/target', _icon_set(
      ['dog-face', 'cat', 'cow', 'red-apple', 'pear', 'grapes', 'red-heart'],
      {'1f436': 'dog-face', '1f408': 'cat', '1f404': 'cow', '1f34e': 'red-apple',
       '1f350': 'pear', '1f347': 'grapes', '2764': 'red-heart'}))
  # The target's rendering family in the web: its own set and a sibling style.
  sibling = reg.publish('@x/sibling', _icon_set(
      ['dog-face', 'cat', 'cow', 'red-apple', 'pear', 'grapes', 'red-heart'],
      {'1f436': 'dog-face', '1f408': 'cat', '1f404': 'cow', '1f34e': 'red-apple',
       '1f350': 'pear', '1f347': 'grapes', '2764': 'red-heart'}))
  return reg, dict(catalogue=cat, web_emoji={'a': web_a, 'b': web_b},
                   web_icons={'icons': icons}, target=target,
                   target_family={'own': target, 'sibling': sibling})


def target_split() -> dict:
  """label -> 'train' | 'test' | 'web' for the test catalogue's target-class emoji."""
  keys = {'animal-mammal': ['1F436', '1F408', '1F404'], 'food-fruit': ['1F34E', '1F350', '1F347']}
  labels = {r['hexcode']: r['label'] for r in CATALOGUE}
  out = {}
  for group in keys.values():
    for part, members in zip(('train', 'test', 'web'), demo_world._split(group)):  # pylint: disable=protected-access
      out.update({labels[k]: part for k in members})
  return out


def test_builds_web_target_ground_truth_and_notice(tmp_path, world_packages):
  _, kw = world_packages
  paths = demo_world.build(str(tmp_path / 'world'), cache_dir=str(tmp_path / 'cache'),
                           progress=False, **kw)
  with open(os.path.join(paths['corpus'], 'captions.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  truth = scoring.load_ground_truth(paths)
  by_caption = {}
  for row in rows:
    by_caption.setdefault(row['caption'], []).append(truth['images'][row['file']])
  # Style a: 6 emoji by code point; b: 2 by name (the unrenderable heart and the icon
  # tied to no emoji are left out); icons: all 3, the one named like an emoji labelled;
  # the target's own style: what is not a target image (2 web-only emoji, the heart); its
  # sibling: all 7 but the 2 test emoji. No rendering of a test emoji anywhere.
  split = target_split()
  test = {label for label, part in split.items() if part == 'test'}
  in_a = {'dog face', 'cat', 'cow', 'red apple', 'pear'}
  in_b = {'dog face', 'grapes'}
  assert len(rows) == (6 - len(test & in_a)) + (2 - len(test & in_b)) + 3 + 3 + 5
  for row in rows:
    entry = truth['images'][row['file']]
    label = row['caption'].split(':')[0]
    if entry['kind'] == 'emoji':
      assert split.get(label) != 'test', row
    if entry['style'] == 'own':
      assert split.get(label, 'web') == 'web', row
  assert sum(truth['images'][r['file']]['style'] == 'own' and
             split.get(r['caption'].split(':')[0]) == 'web' for r in rows) == 2
  assert truth['images'][next(r['file'] for r in rows if r['caption'] == 'cat' and
                              truth['images'][r['file']]['style'] == 'icons')][
                                  'class'] == 'mammal'
  assert by_caption['gear'] == [{'class': '', 'subgroup': '', 'style': 'icons',
                                 'kind': 'icon'}]
  assert by_caption['red heart: love'][0]['kind'] == 'emoji'
  # Relevance is the class: the truth lists the target's class names.
  # Captions never carry the label (subgroup) of the target.
  assert not any('mammal' in r['caption'] or 'fruit-' in r['caption'] for r in rows)
  for row in rows:  # our own file names, real 64 px RGB pictures
    assert row['file'].startswith(f'images/{truth["images"][row["file"]]["style"]}/')
    with Image.open(os.path.join(paths['corpus'], row['file'])) as im:
      assert im.size == (64, 64) and im.mode == 'RGB'
  # Target: the two target classes present, split by emoji, no emoji in both splits.
  cfg = type('C', (), {'name': 'folder', 'data_dir': paths['target'], 'num_examples': 0})
  train, test = target_lib.load(cfg, 'train'), target_lib.load(cfg, 'test')
  assert train.class_names == test.class_names == ['fruit', 'mammal']
  assert len(train.source) == len(test.source) == 2  # a third each; a third web-only
  train_px = {np.asarray(Image.open(io.BytesIO(train.source[i]))).tobytes()
              for i in range(len(train.source))}
  assert not train_px & {np.asarray(Image.open(io.BytesIO(test.source[i]))).tobytes()
                         for i in range(len(test.source))}
  notice = open(os.path.join(str(tmp_path / 'world'), 'NOTICE'), encoding='utf-8').read()
  for package in [kw['catalogue'], *kw['web_emoji'].values(), kw['target']]:
    assert package.spec in notice and package.integrity in notice
  stamp = json.load(open(os.path.join(str(tmp_path / 'world'), 'world.json')))
  assert stamp['web_relevant'] == sum(e['class'] in truth['classes']
                                      for e in truth["images"].values())
  assert stamp['target']['web_only'] == 2
  assert stamp['builder'] == demo_world.BUILDER and stamp['format'] == 'ie-jax-world'
  assert sorted(truth['classes']) == sorted(demo_world.TARGET_CLASSES.values())
  assert not os.path.exists(str(tmp_path / 'world') + '.partial')


def test_checksum_mismatch_fails_and_unpacks_nothing(tmp_path, world_packages):
  reg, kw = world_packages
  good = kw['web_emoji']['a']
  reg.publish('@x/web-a', _icon_set(['tampered']))  # same name and version, new bytes
  with pytest.raises(demo_world.WorldBuildError, match='checksum mismatch'):
    demo_world.build(str(tmp_path / 'world'), cache_dir=str(tmp_path / 'cache'),
                     progress=False, **kw)
  assert not os.path.exists(tmp_path / 'cache' / good.slug)
  assert not os.path.exists(tmp_path / 'world')


def test_missing_npm_is_reported(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))
  with pytest.raises(packages.PackageError, match='npm` is not on PATH'):
    packages.fetch(packages.Package('x', '1', 'sha512-x', 'MIT', 't'), str(tmp_path / 'c'))


def test_unknown_package_and_changed_layout_are_reported(tmp_path, world_packages):
  reg, kw = world_packages
  missing = packages.Package('@x/nope', '1.0.0', 'sha512-x', 'MIT', 't')
  with pytest.raises(packages.PackageError, match='404'):
    packages.fetch(missing, str(tmp_path / 'cache'))
  no_icons = reg.publish('@x/empty', {'README.md': b'moved'})
  with pytest.raises(demo_world.WorldBuildError, match='has no icons.json: its layout changed'):
    demo_world.build(str(tmp_path / 'w'), cache_dir=str(tmp_path / 'cache'), progress=False,
                     **{**kw, 'web_icons': {'empty': no_icons}})


def test_interrupted_build_resumes_and_never_looks_complete(tmp_path, world_packages):
  reg, kw = world_packages
  broken = packages.Package('@x/icons', '1.0.0', 'sha512-wrong', 'MIT', 't')
  out = str(tmp_path / 'world')
  with pytest.raises(demo_world.WorldBuildError, match='resume'):
    demo_world.build(out, cache_dir=str(tmp_path / 'cache'), progress=False,
                     **{**kw, 'web_icons': {'icons': broken}})
  assert not os.path.exists(out)  # no half world under the final name
  done_styles = os.listdir(out + '.partial/rows')
  assert sorted(done_styles) == ['a.jsonl', 'b.jsonl', 'own.jsonl', 'sibling.jsonl']
  demo_world.build(out, cache_dir=str(tmp_path / 'cache'), progress=False, **kw)
  stamp = json.load(open(os.path.join(out, 'world.json')))
  test = {label for label, part in target_split().items() if part == 'test'}
  in_a = {'dog face', 'cat', 'cow', 'red apple', 'pear', 'red heart'}
  assert stamp['styles']['a'] == {'images': len(in_a - test), 'resumed': True}
  assert stamp['styles']['icons']['images'] == 3
  assert not os.path.exists(out + '.partial')
  del reg


def test_unsafe_tarball_member_is_refused(tmp_path):
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    info = tarfile.TarInfo('package/../../evil')
    info.size = 1
    tar.addfile(info, io.BytesIO(b'x'))
  path = tmp_path / 'bad.tgz'
  path.write_bytes(buf.getvalue())
  with pytest.raises(packages.PackageError, match='refusing'):
    packages._extract(str(path), str(tmp_path / 'out'))  # pylint: disable=protected-access
  assert not (tmp_path / 'evil').exists()


def test_emoji_keys_slugs_and_render_errors():
  assert emoji.normalise('2764-FE0F') == emoji.normalise('2764') == '2764'
  assert emoji.normalise('0023-fe0f-20e3') == '23-20E3'
  assert emoji.slug('Piñata & Crème brûlée!') == 'pinata-and-creme-brulee'
  with pytest.raises(iconify.RenderError):
    iconify.render('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"></svg>', 16)
  with pytest.raises(iconify.RenderError):
    iconify.render('not svg at all', 16)
  image = iconify.render('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 8">'
                         '<rect width="16" height="8" fill="#f00"/></svg>', 32)
  px = np.asarray(image)  # a 2:1 picture: centred, white above and below
  assert px.shape == (32, 32, 3) and tuple(px[16, 16]) == (255, 0, 0)
  assert tuple(px[2, 16]) == (255, 255, 255)


def test_diagnosis_auc_matches_scikit_learn_with_ties():
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  from ie_jax.worlds import diagnose  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.random(500) < 0.2
  scores = np.round(rng.normal(size=500) + labels, 1)  # rounded: many ties
  assert diagnose._auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)  # pylint: disable=protected-access
  web, target = rng.normal(size=(50, 8)), rng.normal(size=(20, 8))
  sims = (web / np.linalg.norm(web, axis=1, keepdims=True)) @ (
      target / np.linalg.norm(target, axis=1, keepdims=True)).T
  expected = np.sort(sims, axis=1)[:, -5:].mean(axis=1)
  # The run's own reward (`reward.make_knn_reward`), in float32 on the device.
  np.testing.assert_allclose(diagnose.knn_reward(web, target, 5), expected, rtol=1e-5, atol=1e-6)
