"""Named random streams (`utils/seeds.py`): the numbers every recorded figure was made
with, and a clear error for a stream that does not exist."""
import pytest

from ie_jax.utils import seeds


def test_streams_keep_the_numbers_recorded_runs_used():
  assert seeds.stream(3, 'queries', 5) == 3 * 1_000_003 + 5
  assert seeds.stream(3, 'train', 2) == 3 * 104_729 + 2
  assert seeds.stream(3, 'mixture', 2) == 3 * 7_919 + 2
  assert seeds.stream(3, 'warmup') == 3 * 7_753 + 1
  assert seeds.stream(3, 'finetune', 1) == 3 * 31 + 1
  assert seeds.stream(3, 'target_pretrain') == 3


def test_an_unknown_stream_names_the_streams():
  with pytest.raises(KeyError, match='queries'):
    seeds.stream(0, 'query')
