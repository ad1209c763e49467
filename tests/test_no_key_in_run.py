"""A whole explore run through a keyed engine: the key is in no file of the workdir.

`test_web_no_leaks.py` covers the search phase against hostile answers; this runs every
phase (checkpoints, side files, logs, TensorBoard events, the report) with the Flickr
backend pointed at the same loopback imitation, which echoes the key back in errors.
"""
import asyncio
import os
import threading
import urllib.parse

import pytest

from configs import tiny
from ie_jax import explore
from ie_jax.testing.fault_server import serve
from test_web_no_leaks import KEY, HostileApi


class _Server:
  """The imitation API on a loopback port, served from its own thread and event loop."""

  def __enter__(self):
    self.loop = asyncio.new_event_loop()
    ready, self.url = threading.Event(), None
    self.stop = asyncio.Event()

    async def main():
      async with serve(HostileApi().app()) as url:
        self.url = url
        ready.set()
        await self.stop.wait()

    self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
    self.thread.start()
    ready.wait(30)
    return self.url

  def __exit__(self, *unused):
    self.loop.call_soon_threadsafe(self.stop.set)
    self.thread.join(30)


@pytest.mark.slow
def test_key_reaches_no_file_of_a_whole_run(tmp_path, monkeypatch):
  monkeypatch.setenv('FLICKR_API_KEY', KEY)
  config = tiny.get_config('iterations=1')
  config.web.engine = 'flickr'
  config.web.allow_networks = '127.0.0.0/8'
  config.web.min_side = 16
  config.reward.min_images = 1
  # Queries the imitation answers normally ('ok', 'disc') and by echoing the key back in an
  # error, a 500 page, malformed JSON, or a reset connection; all drawn in the iteration.
  queries = ['ok', 'disc', 'echo-key', 'echo-500', 'bad-json', 'reset']
  vocab = tmp_path / 'vocab.tsv'
  vocab.write_text(''.join(f'{q}\t{q} (query): a query.\n' for q in queries))
  config.world = ''
  config.concepts.vocab = str(vocab)
  config.concepts.mode = 'random'
  config.search.queries_per_iteration = len(queries)
  workdir = str(tmp_path / 'run')
  with _Server() as url:
    config.web.engine_url = url
    run = explore.run(config, workdir)
  assert run.state.history and run.state.history[0]['download_ok'] > 0
  spellings = {KEY, urllib.parse.quote(KEY), KEY.lower(), KEY.encode('utf-16-le').decode(
      'latin-1')}
  scanned = 0
  for root, _, files in os.walk(workdir):
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        data = f.read().decode('latin-1')
      scanned += 1
      for s in spellings:
        assert s not in data, f'the API key is in {os.path.join(root, name)}'
  assert scanned > 20  # checkpoints, side files, manifests, logs, report
