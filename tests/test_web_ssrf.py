"""The address guard refuses every non-public destination unless allowed."""
import asyncio

import pytest

from ie_jax.web import ssrf

REFUSED = ['127.0.0.1', '127.8.9.10', '10.0.0.1', '172.16.0.1', '172.31.255.255', '192.168.1.1',
           '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::',
           'fc00::1', 'fd12:3456::1', 'fe80::1', 'ff02::1', '::ffff:127.0.0.1',
           '::ffff:10.0.0.1', '64:ff9b::a9fe:a9fe', '2002:7f00:1::1']
ALLOWED = ['93.184.216.34', '8.8.8.8', '172.32.0.1', '2606:4700::1111', '::ffff:8.8.8.8']


@pytest.mark.parametrize('address', REFUSED)
def test_refused(address):
  guard = ssrf.AddressGuard()
  assert not guard.is_allowed(address)
  with pytest.raises(ssrf.BlockedAddress):
    guard.check(address)


@pytest.mark.parametrize('address', ALLOWED)
def test_allowed(address):
  ssrf.AddressGuard().check(address)


def test_allow_list_opens_only_what_it_names():
  guard = ssrf.AddressGuard(['127.0.0.1/32', '10.1.0.0/16'])
  assert guard.is_allowed('127.0.0.1') and guard.is_allowed('10.1.2.3')
  assert not guard.is_allowed('127.0.0.2') and not guard.is_allowed('10.2.0.1')
  assert guard.is_allowed('::ffff:127.0.0.1')  # the same address in IPv6 clothing


def test_ip_literal():
  assert str(ssrf.ip_literal('[::1]')) == '::1'
  assert str(ssrf.ip_literal('fe80::1%eth0')) == 'fe80::1'
  assert ssrf.ip_literal('example.com') is None


class _Fixed:
  """A resolver that answers from a table, as a DNS server controlled by an attacker would."""

  def __init__(self, table):
    self.table = table

  async def resolve(self, host, port=0, family=0):
    return [{'hostname': host, 'host': a, 'port': port, 'family': family, 'proto': 0,
             'flags': 0} for a in self.table[host]]

  async def close(self):
    pass


def test_resolver_refuses_names_with_any_private_address():
  resolver = ssrf.GuardedResolver(ssrf.AddressGuard(), _Fixed({
      'public.test': ['93.184.216.34'], 'rebind.test': ['93.184.216.34', '10.0.0.1'],
      'meta.test': ['169.254.169.254']}))
  assert len(asyncio.run(resolver.resolve('public.test', 80))) == 1
  for host in ('rebind.test', 'meta.test'):
    with pytest.raises(ssrf.BlockedAddress):
      asyncio.run(resolver.resolve(host, 80))
