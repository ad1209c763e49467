"""Kill/resume soak (issue #9): a 4-iteration tiny run SIGKILLed at 20 seeded random moments
and resumed each time ends exactly like an uninterrupted run with the same seed.

The harness is `ie_jax/testing/soak.py` (also a CLI for longer soaks). Run alone with
`pytest -s tests/test_soak.py` to see the counts line.
"""
import pytest

from configs import tiny
from ie_jax.testing import soak


@pytest.mark.slow
def test_twenty_random_sigkills_lose_and_duplicate_nothing(tmp_path):
  config = soak.soak_config(tiny, iterations=4)
  # No persistent compilation cache: children that loaded executables from one aborted
  # (SIGABRT) in two CI-like runs, and JAX writes its entries non-atomically, so a child
  # killed mid-write would leave a truncated one. Every child compiles afresh.
  out = soak.soak(config, str(tmp_path / 'killed'), str(tmp_path / 'straight'), '',
                  kills=20, seed=0)
  print(soak.summary_line(out))
  assert (out['kills'], out['resumes']) == (20, 20)
  assert soak.lost_and_duplicated(out['straight_images'], out['resumed_images']) == (0, 0)
  assert out['resumed_images'] == out['straight_images']
  resumed, straight = out['resumed'], out['straight']
  assert (resumed['iteration'], resumed['phase'], len(resumed['history'])) == (4, 'sample', 4)
  assert resumed['observations'] == straight['observations']
  assert resumed['replay'] == straight['replay']
  assert resumed['saves'] == straight['saves']  # the same checkpoints, none skipped or extra
  # Every retained checkpoint restored (in the last child, arrays included), none left half
  # written, and no temporary file anywhere in the workdir.
  assert out['restored_steps'] and out['restored_steps'][-1] == resumed['saves']
  assert out['temporary_files'] == []
