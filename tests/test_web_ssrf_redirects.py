"""The address guard end to end: redirects, DNS answers and odd host spellings that lead to
private, loopback or link-local addresses are refused before any connection, unless the
config's allow-list names them.

A "victim" server listens on 127.0.0.2, standing in for a service inside the user's network:
it must see no request unless it is allowed. DNS answers come from a `FixedResolver`, an
attacker's name server.
"""
import asyncio
import contextlib
import dataclasses

import pytest

from ie_jax.testing.fault_server import FETCH, LIMITS, FaultServer, FixedResolver, serve
from ie_jax.web import download, records, ssrf

VICTIM = '127.0.0.2'
DNS = {
    'victim.test': [VICTIM], 'ten.test': ['10.1.2.3'], 'rfc1918.test': ['172.16.9.9'],
    'top-of-172.test': ['172.31.255.254'], 'home.test': ['192.168.0.10'],
    'metadata.test': ['169.254.169.254'], 'loopback6.test': ['::1'], 'ula.test': ['fc00::5'],
    'ula-d.test': ['fd12:3456::1'], 'mapped.test': ['::ffff:127.0.0.2'],
    'mapped-ten.test': ['::ffff:10.0.0.1'], 'zero.test': ['0.0.0.0'],
    'rebind.test': ['93.184.216.34', '10.0.0.1'],
}
LITERALS = ['127.0.0.2', '10.0.0.1', '172.16.0.1', '172.31.255.255', '192.168.1.1',
            '169.254.169.254', '[::1]', '[fc00::1]', '[fd00::1]', '[::ffff:127.0.0.2]',
            '[::ffff:10.0.0.1]', '0.0.0.0', '[::]', '[::ffff:0:0]']
# Spellings of 127.0.0.x that `ipaddress` does not parse but connect() would accept.
SHORTHANDS = ['127.2', '0177.0.0.2', '2130706434', '0', '0x7f000002', '0x7f.2']


@contextlib.asynccontextmanager
async def two_servers():
  """The server the search results point at (127.0.0.1) and the victim (127.0.0.2)."""
  public, victim = FaultServer(), FaultServer()
  async with serve(public.app()) as base, serve(victim.app(), VICTIM) as victim_base:
    yield public, base, victim, int(victim_base.rsplit(':', 1)[1])


def run(urls_for, allow=('127.0.0.1/32',)):
  """Downloads `urls_for(base, victim_port)`; returns (statuses, public server, victim)."""
  options = download.DownloadOptions(
      fetch=dataclasses.replace(FETCH, allow_networks=allow, retries=0), image=LIMITS,
      progress=False)

  async def go():
    async with two_servers() as (public, base, victim, port):
      urls = urls_for(base, port)
      got = {}
      await download.Downloader(options, resolver=FixedResolver(DNS)).run(
          [records.Job(u) for u in urls], lambda r: got.__setitem__(r.url, r))
      return [got[u] for u in urls], public, victim
  return asyncio.run(go())


def redirect(base: str, target: str) -> str:
  return f'{base}/redirect?to={target}'


@pytest.mark.parametrize('host', LITERALS + list(DNS) + SHORTHANDS)
def test_redirects_to_refused_addresses_are_blocked(host):
  got, public, victim = run(lambda base, port: [
      redirect(base, f'http://{host}:{port}/img/a.jpg'),  # through a redirect
      f'http://{host}:{port}/img/a.jpg'])                 # and as the result itself
  assert [r.status for r in got] == ['ssrf_blocked'] * 2, [r.detail for r in got]
  assert public.hits == {'redirect': 1} and victim.hits == {}


def test_the_allow_list_opens_exactly_what_it_names():
  targets = lambda base, port: [  # noqa: E731
      redirect(base, f'http://{VICTIM}:{port}/img/a.jpg'),
      redirect(base, f'http://victim.test:{port}/img/b.png'),
      f'http://victim.test:{port}/img/c.webp',
      redirect(base, f'http://ten.test:{port}/img/d.gif'),       # 10/8 is still refused
      redirect(base, f'http://metadata.test:{port}/img/e.jpg')]  # and so is 169.254/16
  got, _, victim = run(targets, allow=('127.0.0.1/32', f'{VICTIM}/32'))
  assert [r.status for r in got] == ['ok'] * 3 + ['ssrf_blocked'] * 2, [r.detail for r in got]
  assert victim.hits == {}  # /img/ does not count hits; the 'ok' records prove the fetches
  # Without the victim in the allow-list, the same jobs never reach it.
  got, _, victim = run(targets)
  assert [r.status for r in got] == ['ssrf_blocked'] * 5


RANGES = [  # (network, an address inside, an address just outside it that is also refused)
    ('127.0.0.0/8', '127.255.0.1', '10.0.0.1'), ('10.0.0.0/8', '10.200.0.1', '172.16.0.1'),
    ('172.16.0.0/12', '172.20.1.1', '192.168.0.1'),
    ('192.168.0.0/16', '192.168.77.1', '169.254.0.1'),
    ('169.254.0.0/16', '169.254.169.254', '127.0.0.1'), ('::1/128', '::1', 'fc00::1'),
    ('fc00::/7', 'fdff::1', 'fe80::1'), ('0.0.0.0/32', '0.0.0.0', '127.0.0.1'),
]


@pytest.mark.parametrize('network, inside, outside', RANGES)
def test_each_refused_range_opens_only_when_allowed(network, inside, outside):
  for address in (inside, outside):
    assert not ssrf.AddressGuard().is_allowed(address)
  guard = ssrf.AddressGuard([network])
  assert guard.is_allowed(inside) and not guard.is_allowed(outside)
  if ':' not in inside:  # the IPv4-mapped spelling is the same address, judged the same
    assert not ssrf.AddressGuard().is_allowed(f'::ffff:{inside}')
    assert guard.is_allowed(f'::ffff:{inside}')


@pytest.mark.parametrize('host, address', [('127.1', '127.0.0.1'), ('2130706433', '127.0.0.1'),
                                           ('0177.0.0.1', '127.0.0.1'), ('0', '0.0.0.0'),
                                           ('0x7f.1', '127.0.0.1'), ('example.org', None),
                                           ('a\x00b', None), ('\u0661.1', None)])
def test_ip_literal_reads_shorthand_ipv4_as_connect_would(host, address):
  got = ssrf.ip_literal(host)
  assert (None if got is None else str(got)) == address
