"""The address guard: downloads never reach private, loopback or link-local destinations.

Search results are attacker-controlled. Without this guard a result (or a redirect from one)
pointing at 169.254.169.254, a router's admin page or a service on localhost would be
fetched from inside the user's network. Every address is checked twice: IP literals before a
request is made, and host names inside the connector's resolver, so the address that is
checked is the address that is connected to (no DNS-rebinding window between the two).
"""
import ipaddress
import socket
from collections.abc import Iterable

from aiohttp import abc as aiohttp_abc
from aiohttp import resolver as aiohttp_resolver

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Prefixes that carry an IPv4 address inside an IPv6 one; the embedded address is what a
# gateway ends up connecting to, so it is the one to judge.
_NAT64 = ipaddress.ip_network('64:ff9b::/96')


class BlockedAddress(OSError):
  """A destination resolved to an address the guard refuses."""


class AddressGuard:
  """Decides whether a destination address may be connected to.

  Refused: every address that is not globally routable (`ipaddress`'s `is_global` is
  False for 127/8, 10/8, 172.16/12, 192.168/16, 169.254/16, 100.64/10, 0/8, ::1, fc00::/7,
  fe80::/10, documentation and reserved ranges) and every multicast address, including
  IPv4 addresses wrapped in IPv4-mapped, 6to4 and NAT64 IPv6 forms.

  Args:
    allow: networks (e.g. `['127.0.0.1/32']` in tests, or a lab's own subnet) that are
      permitted even though they would otherwise be refused.
  """

  def __init__(self, allow: Iterable[str] = ()):
    self.allow: tuple[Network, ...] = tuple(
        ipaddress.ip_network(net, strict=False) for net in allow)

  def is_allowed(self, address: str | Address) -> bool:
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if any(ip.version == net.version and ip in net for net in self.allow):
      return True
    inner = _embedded_ipv4(ip)
    if inner is not None:
      return self.is_allowed(inner)
    return ip.is_global and not ip.is_multicast

  def check(self, address: str) -> None:
    """Raises `BlockedAddress` unless `address` (an IP literal) may be connected to."""
    if not self.is_allowed(address.split('%', 1)[0]):  # drop an IPv6 zone id
      raise BlockedAddress(f'destination address {address} is not allowed')


def ip_literal(host: str) -> Address | None:
  """The address if `host` is an IP literal (brackets allowed), else None.

  Shorthand IPv4 forms that `ipaddress` does not parse ('127.1', '2130706433',
  '0177.0.0.1', '0') count as literals of the address the C library's `inet_aton` reads
  them as: an HTTP client that sends such a host straight to connect() reaches that
  address without asking any resolver (aiohttp treats all-digit hosts as addresses).
  """
  host = host.strip('[]').split('%', 1)[0]
  try:
    return ipaddress.ip_address(host)
  except ValueError:
    pass
  try:
    return ipaddress.IPv4Address(socket.inet_aton(host))
  except (OSError, ValueError):  # not an address at all; ValueError: NUL or non-ASCII
    return None


class GuardedResolver(aiohttp_abc.AbstractResolver):
  """An aiohttp resolver that refuses host names resolving to any refused address.

  A name with one public and one private address is refused outright rather than
  filtered: that split is the usual shape of a rebinding attack, not of a real image host.
  """

  def __init__(self, guard: AddressGuard, inner: aiohttp_abc.AbstractResolver | None = None):
    self._guard = guard
    self._inner = inner or aiohttp_resolver.DefaultResolver()

  async def resolve(self, host: str, port: int = 0,
                    family: socket.AddressFamily = socket.AF_INET):
    results = await self._inner.resolve(host, port, family)
    for result in results:
      self._guard.check(result['host'])
    return results

  async def close(self) -> None:
    await self._inner.close()


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
  if ip.version != 6:
    return None
  if ip.ipv4_mapped is not None:
    return ip.ipv4_mapped
  if ip.sixtofour is not None:
    return ip.sixtofour
  if ip in _NAT64:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
  return None
