"""The explore package's parts that issue #21 introduced: the one-process collectives, the
one search path (within-iteration duplicates stored, then excluded in the store), the
typed side-file fields and the per-phase record."""
import numpy as np

from configs import common
from ie_jax.explore import search, setup, state as state_lib
from ie_jax.testing.fault_server import FaultServer, serve_in_thread
from ie_jax.utils import collectives
from ie_jax.web import api, shards
from ie_jax.web import dedup as dedup_lib


def test_one_process_collectives_do_nothing():
  comm = collectives.current()
  assert isinstance(comm, collectives.Local) and (comm.index, comm.count) == (0, 1)
  assert comm.primary
  # As another process would receive it: JSON types (a tuple arrives as a list).
  assert comm.allgather_json({'a': (1, 2)}) == [{'a': [1, 2]}]
  assert comm.broadcast_json({'q': 1}) == {'q': 1}
  comm.barrier('nothing to wait for')
  data = object()
  assert comm.own_batches(data, 8, 32) is data
  assert comm.alone('python -m ie_jax.eval.probe')


def _write(store: shards.ShardedStore, iteration: int, names: list[str]) -> None:
  with store.writer(iteration) as part:
    for name in names:
      part.add(name.encode(), {'url': name, 'status': 'ok', 'sha256': f'sha-of-{name}'})


def test_exclusions_live_in_the_store_and_every_reader_sees_them(tmp_path):
  store = shards.ShardedStore(str(tmp_path), 0, 1)
  _write(store, 0, ['c', 'b', 'a'])
  store.exclude(0, {}, write=True)
  assert not list((tmp_path / 'web').glob('excluded-*'))  # nothing dropped: no file
  store.exclude(0, {1: ['duplicate', 'same bytes as a']}, write=True)
  for reader in (store, shards.ShardedStore(str(tmp_path), 0, 1),
                 shards.open_run_store(str(tmp_path))):
    assert [r['url'] for r in reader.kept(0)] == ['c', 'a']
    assert reader.kept_indices(0).tolist() == [2, 0]  # by content, not by download order
    assert reader.manifest(0)[1]['status'] == 'duplicate'
    assert [r['status'] for r in reader.manifest(0, decided=False)] == ['ok'] * 3
    assert reader.read(0, 1) == b'b'  # the dropped image stays stored under its index
  assert store.kept(7) == []  # an iteration that stored nothing


def test_one_process_search_stores_duplicates_and_excludes_them(tmp_path):
  """One process runs the multi-process steps: every image is stored, then the copies of
  earlier jobs' images are excluded in job order, whichever download finished first."""

  class Engine:
    name = 'test'

    def __init__(self, urls):
      self.urls = urls

    async def search(self, query, n):
      del query
      return [api.Result(u, 'title', 'test', i) for i, u in enumerate(self.urls)][:n]

  web = common.get_base_config().web
  web.allow_networks, web.min_side, web.max_side = '127.0.0.1/32', 32, 64
  with serve_in_thread(FaultServer().app()) as base:
    urls = [f'{base}/img/a.jpg', f'{base}/copy/a-again.jpg', f'{base}/img/b.png',
            f'{base}/copy/a-small.jpg']
    store = shards.ShardedStore(str(tmp_path), 0, 1)
    counts = search.run(0, [(0, 'q')], Engine(urls), store, dedup=dedup_lib.DedupIndex(),
                        url_cache=dedup_lib.UrlCache(), web_config=web,
                        images_per_query=len(urls))
  assert counts['ok'] == 2 and sum(counts.values()) == 4, counts
  assert [r['status'] for r in store.manifest(0, decided=False)] == ['ok'] * 4
  assert [r['url'] for r in store.kept(0)] == [urls[0], urls[2]]
  assert sorted(store.excluded(0)) == [1, 3]
  assert sorted(shards.open_run_store(str(tmp_path)).excluded(0)) == [1, 3]


def test_typed_fields_write_new_files_under_the_old_keys(tmp_path):
  side = state_lib.SideFiles(str(tmp_path))
  state = state_lib.ExplorerState()
  carried = state_lib.Carried(side, state)
  assert carried.replay.shape == (0, 2) and carried.replay.dtype == np.int64
  assert carried.rewards.shape == (0,) and carried.reward_book == {}
  carried.rewards = [0.5, 0.25]
  carried.reward_book = {7: 0.5}
  state.saves = 1
  carried.replay = np.array([[0, 1]])
  assert state.files['rewards'] == 'rewards-000000.npy'  # the keys runs saved before used
  assert state.files['replay'] == 'replay-000001.npy'
  assert carried.rewards.dtype == np.float32 and carried.rewards.tolist() == [0.5, 0.25]
  assert carried.reward_book == {7: 0.5}
  assert state_lib.Carried(side, state).replay.tolist() == [[0, 1]]
  assert carried.urls is None and not carried.saved('urls') and carried.saved('replay')
  carried.urls = {'https://a.example/x.jpg': 'ok'}
  assert state.files['urls'] == 'urls-000001.json' and carried.saved('urls')
  assert state_lib.Carried(side, state).urls == {'https://a.example/x.jpg': 'ok'}


def test_the_last_phase_closes_the_iteration():
  phases = ('a', 'b')
  state = state_lib.ExplorerState(phase='a')
  assert state.record(phases, {'x': 1}, 2.0) is None
  assert (state.iteration, state.phase) == (0, 'b')
  done = state.record(phases, {'y': 2}, 3.0)
  assert done == {'iteration': 0, 'x': 1, 'time_a_s': 2.0, 'y': 2, 'time_b_s': 3.0}
  assert state.history == [done] and state.current == {}
  assert (state.iteration, state.phase) == (1, 'a')


def test_exclusions_saved_as_a_side_file_move_into_the_store(tmp_path):
  """Multi-process runs saved before the store kept the exclusions resume with them."""
  store = shards.ShardedStore(str(tmp_path), 0, 1)
  _write(store, 0, ['a', 'b'])
  _write(store, 1, ['c', 'd'])
  side = state_lib.SideFiles(str(tmp_path))
  state = state_lib.ExplorerState()
  side.save_array(state, 'excluded', np.array([[0, 1], [1, 0]]))
  setup.move_exclusions(side, state, store, write=True)
  assert 'excluded' not in state.files
  reopened = shards.ShardedStore(str(tmp_path), 0, 1)
  assert [r['url'] for r in reopened.kept(0)] == ['a']
  assert [r['url'] for r in reopened.kept(1)] == ['d']


def test_pruning_deletes_only_side_files_it_wrote(tmp_path):
  side = state_lib.SideFiles(str(tmp_path))
  state = state_lib.ExplorerState()
  carried = state_lib.Carried(side, state)
  carried.replay = np.zeros((0, 2))
  state.saves = 1
  carried.replay = np.array([[0, 1]])  # replay-000000.npy is now stale
  root = tmp_path / 'explorer'
  (root / '.tmp-urls-000001.json-x7q2').write_text('{')  # a killed write's temporary
  (root / 'notes.txt').write_text('mine')  # put there by someone else
  (root / 'replay-backup.npy').write_text('mine too')
  side.prune(state)
  assert sorted(p.name for p in root.iterdir()) == ['notes.txt', 'replay-000001.npy',
                                                     'replay-backup.npy']
