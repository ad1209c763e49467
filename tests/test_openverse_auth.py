"""Openverse with a registered application: the engine obtains its bearer token from the
client credentials (OAuth2, a urlencoded POST as Openverse's token endpoint takes), renews
it before it lapses or when a request says it was revoked, and never logs a secret; the
`register` command; the anonymous-run warning. Against a loopback imitation of the API."""
import asyncio
import logging

import pytest
from aiohttp import web

from configs import common
from ie_jax.explore import setup as explore_setup
from ie_jax.testing.fault_server import serve_in_thread
from ie_jax.web import api, engines, openverse

ID, SECRET = 'client-id-7f3a', 'client-secret-9c1e'
FAST = api.HttpOptions(retries=1, backoff_s=0.0, min_interval_s=0.0)


class FakeOpenverse:
  """Issues tok-1, tok-2, ... for the right credentials; `valid` are the tokens the image
  search accepts (None: every token issued so far)."""

  def __init__(self, expires_in=36000, valid=None):
    self.expires_in, self.valid = expires_in, valid
    self.issued, self.forms, self.searches = [], [], []

  def app(self):
    app = web.Application()
    app.router.add_post('/v1/auth_tokens/token/', self.token)
    app.router.add_post('/v1/auth_tokens/register/', self.register)
    app.router.add_get('/v1/images/', self.images)
    return app

  async def token(self, request):
    form = dict(await request.post())  # urlencoded, as OAuth2 token endpoints take
    self.forms.append(form)
    if form != {'client_id': ID, 'client_secret': SECRET, 'grant_type': 'client_credentials'}:
      return web.json_response({'error': 'invalid_client'}, status=401)
    self.issued.append(f'tok-{len(self.issued) + 1}')
    return web.json_response({'access_token': self.issued[-1], 'token_type': 'Bearer',
                              'expires_in': self.expires_in, 'scope': 'read write'})

  async def register(self, request):
    body = await request.json()
    if not body.get('email'):
      return web.json_response({'email': ['This field is required.']}, status=400)
    return web.json_response({'client_id': ID, 'client_secret': SECRET, 'name': body['name'],
                              'msg': 'Check your email for a verification link.'}, status=201)

  async def images(self, request):
    auth = request.headers.get('Authorization', '')
    self.searches.append(auth)
    valid = self.issued if self.valid is None else self.valid
    size = int(request.query['page_size'])
    if size > 20 and auth.removeprefix('Bearer ') not in valid:
      return web.json_response({'detail': 'Invalid token.'}, status=401)
    q = request.query['q']
    if q == 'echo':  # a server that echoes what it was sent in an error page
      return web.Response(status=404, text=f'no such page for {auth}')
    return web.json_response({'page_count': 1, 'results': [
        {'url': f'https://img.example.org/{q}/{i}.jpg', 'title': f'{q} {i}'}
        for i in range(size)]})


def searches(fake, queries, n=300):
  """One engine, each query in its own event loop (as the search phase calls it)."""
  with serve_in_thread(fake.app()) as base:
    engine = openverse.Openverse(base, FAST)
    return [asyncio.run(engine.search(query, n)) for query in queries]


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
  monkeypatch.delenv(openverse.TOKEN_ENV, raising=False)
  monkeypatch.setenv(openverse.CLIENT_ID_ENV, ID)
  monkeypatch.setenv(openverse.CLIENT_SECRET_ENV, SECRET)


def test_the_engine_gets_its_token_once_and_searches_with_large_pages(caplog):
  caplog.set_level(logging.DEBUG)
  fake = FakeOpenverse()
  first, second = searches(fake, ['corgi', 'tulip'])
  assert len(first) == len(second) == 300
  assert fake.issued == ['tok-1'] and fake.searches == ['Bearer tok-1'] * 2
  assert fake.forms == [{'client_id': ID, 'client_secret': SECRET,
                         'grant_type': 'client_credentials'}]
  assert not any(s in caplog.text for s in (ID, SECRET, 'tok-1'))


def test_an_obtained_token_is_redacted_from_errors():
  fake = FakeOpenverse()
  with pytest.raises(api.EngineError) as e:
    searches(fake, ['echo'])
  assert fake.issued == ['tok-1'] and 'HTTP 404' in str(e.value)
  assert 'tok-1' not in str(e.value) and '<redacted>' in str(e.value)


def test_a_token_near_its_expiry_is_renewed_before_the_next_request():
  fake = FakeOpenverse(expires_in=int(openverse.RENEW_BEFORE_S))  # within the margin
  searches(fake, ['corgi', 'tulip'])
  assert fake.issued == ['tok-1', 'tok-2']
  assert fake.searches == ['Bearer tok-1', 'Bearer tok-2']


def test_a_revoked_token_is_replaced_once_and_the_request_repeated():
  fake = FakeOpenverse(valid=['tok-2'])  # tok-1 was revoked after it was issued
  results, = searches(fake, ['corgi'])
  assert len(results) == 300
  assert fake.issued == ['tok-1', 'tok-2']
  assert fake.searches == ['Bearer tok-1', 'Bearer tok-2']


def test_wrong_credentials_fail_with_advice_and_no_secret(monkeypatch):
  monkeypatch.setenv(openverse.CLIENT_SECRET_ENV, 'not-the-secret-4b2d')
  with pytest.raises(api.EngineError) as e:
    searches(FakeOpenverse(), ['corgi'])
  assert 'HTTP 401' in str(e.value) and 'not-the-secret-4b2d' not in str(e.value)


def test_half_the_credentials_is_refused_at_once(monkeypatch):
  monkeypatch.delenv(openverse.CLIENT_SECRET_ENV)
  with pytest.raises(api.MissingKeyError, match='OPENVERSE_CLIENT_SECRET'):
    openverse.Openverse('http://127.0.0.1:1', FAST)
  assert not openverse.has_credentials()
  monkeypatch.setenv(openverse.TOKEN_ENV, 'given-token')
  assert openverse.has_credentials()


def test_a_given_token_is_used_as_it_is(monkeypatch):
  monkeypatch.setenv(openverse.TOKEN_ENV, 'tok-1')
  fake = FakeOpenverse(valid=['tok-1'])
  searches(fake, ['corgi'])
  assert fake.forms == [] and fake.searches == ['Bearer tok-1']


def test_register_prints_the_credentials(capsys):
  with serve_in_thread(FakeOpenverse().app()) as base:
    assert openverse.main(['register', '--name', 'my-ie-jax', '--description', 'research',
                           '--email', 'me@example.org', '--base_url', base]) == 0
  out, err = capsys.readouterr()
  assert f'"client_id": "{ID}"' in out and f'"client_secret": "{SECRET}"' in out
  assert 'OPENVERSE_CLIENT_ID' in err

  with serve_in_thread(FakeOpenverse().app()) as base:
    assert openverse.main(['register', '--name', 'x', '--description', 'y', '--email', '',
                           '--base_url', base]) == 1
  assert 'HTTP 400' in capsys.readouterr().err


def test_an_anonymous_paper_run_is_warned_at_start(monkeypatch, caplog):
  monkeypatch.delenv(openverse.CLIENT_ID_ENV)
  monkeypatch.delenv(openverse.CLIENT_SECRET_ENV)
  config = common.paper_config(None, target='oxford_flowers102', iterations=1,
                               category='flower')
  explore_setup.make_engine(config, None, engines.QueryCache())
  assert 'about 1280 requests' in caplog.text and 'OPENVERSE_CLIENT_ID' in caplog.text
  caplog.clear()
  monkeypatch.setenv(openverse.TOKEN_ENV, 'tok')
  explore_setup.make_engine(config, None, engines.QueryCache())
  assert 'Openverse without credentials' not in caplog.text
