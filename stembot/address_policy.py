"""Which IP addresses stembot may connect to when it fetches a link a member gave it.

The whole policy is in this file, in tables, so it reads the same on every Python: nothing
here asks ``ipaddress`` whether an address is global or private (those answers changed between
patch releases). The tables follow IANA's IPv4 and IPv6 Special-Purpose Address Registries.

The rule, for an address about to be connected to:
  IPv4   refused if it lies in ``REFUSED_IPV4``.
  IPv6   an address that carries an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo) is judged
         by what it carries, since that is where the packets go; any other address must lie
         in the global unicast space 2000::/3 and outside ``REFUSED_IPV6``.
Multicast, unspecified and broadcast addresses are never a fetch target, whatever the settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# IANA IPv4 Special-Purpose Address Registry: every block not globally reachable, plus
# multicast and the reserved class E space.
REFUSED_IPV4: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_V4("0.0.0.0/8"), "'this network'"),
    (_V4("10.0.0.0/8"), "private-use"),
    (_V4("100.64.0.0/10"), "shared address space (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (cloud metadata services live here)"),
    (_V4("172.16.0.0/12"), "private-use"),
    # Includes 192.0.0.9 and .10 (anycast, nominally global): no audio host lives there.
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_V4("192.88.99.0/24"), "deprecated 6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private-use"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (with 255.255.255.255, limited broadcast)"),
)

GLOBAL_UNICAST_IPV6: Final = _V6("2000::/3")

# Inside 2000::/3 but not globally reachable (IANA IPv6 Special-Purpose Address Registry).
REFUSED_IPV6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    # Benchmarking 2001:2::/48, ORCHID, AMT, ...; Teredo (2001::/32) is unwrapped before this.
    (_V6("2001::/23"), "IETF protocol assignments"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("3fff::/20"), "documentation (RFC 9637)"),
)

# Outside 2000::/3, so refused anyway; named here so a refusal in the log says what it was.
_NAMED_OUTSIDE_IPV6: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("::/96"), "deprecated IPv4-compatible"),
    (_V6("::ffff:0:0:0/96"), "IPv4-translated (SIIT)"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
    (_V6("100:0:0:1::/64"), "dummy prefix"),
    (_V6("5f00::/16"), "SRv6 segment identifiers"),
    (_V6("fc00::/7"), "unique local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "deprecated site-local"),
    (_V6("ff00::/8"), "multicast"),
)

# Never a fetch target, even with STEMBOT_ALLOW_PRIVATE_URLS.
NEVER_ALLOWED: Final[tuple[IPNetwork, ...]] = (
    _V4("0.0.0.0/32"),
    _V4("224.0.0.0/4"),
    _V4("255.255.255.255/32"),
    _V6("::/128"),
    _V6("ff00::/8"),
)


# --- IPv6 forms that carry an IPv4 address ------------------------------------------------------


def _low_32_bits(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)


def _sixtofour(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    # 2002:AABB:CCDD::/48 carries AA.BB.CC.DD in bits 16-47.
    return (ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF),)


def _teredo(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    # 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC: the server in bits 32-63, the client inverted in
    # the low 32 bits. Packets reach the client through the server, so both must be public.
    server = ipaddress.IPv4Address((int(address) >> 64) & 0xFFFFFFFF)
    client = ipaddress.IPv4Address(~int(address) & 0xFFFFFFFF)
    return (server, client)


_Unwrap = Callable[[ipaddress.IPv6Address], tuple[ipaddress.IPv4Address, ...]]

_WRAPPING_FORMS: Final[tuple[tuple[ipaddress.IPv6Network, str, _Unwrap], ...]] = (
    (_V6("::ffff:0:0/96"), "IPv4-mapped", _low_32_bits),
    (_V6("64:ff9b::/96"), "NAT64", _low_32_bits),
    (_V6("2002::/16"), "6to4", _sixtofour),
    (_V6("2001::/32"), "Teredo", _teredo),
)


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo), else ()."""
    if isinstance(address, ipaddress.IPv6Address):
        for network, _name, unwrap in _WRAPPING_FORMS:
            if address in network:
                return unwrap(address)
    return ()


# --- the decision -------------------------------------------------------------------------------


def parse_address(address: str | IPAddress) -> IPAddress | None:
    """An address from a string as sockets and resolvers give it (zone id dropped), or None."""
    if not isinstance(address, str):
        return address
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public host stembot may fetch from, or None when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return _first_match(REFUSED_IPV4, address)
    for network, name, unwrap in _WRAPPING_FORMS:
        if address in network:
            for inner in unwrap(address):
                reason = refusal_reason(inner)
                if reason is not None:
                    return f"{name} form of {inner}, {reason}"
            return None
    if address not in GLOBAL_UNICAST_IPV6:
        named = _first_match(_NAMED_OUTSIDE_IPV6, address)
        return named or "outside the global unicast space 2000::/3"
    return _first_match(REFUSED_IPV6, address)


def is_global_address(address: IPAddress) -> bool:
    """Globally reachable unicast, and so is every IPv4 address it carries."""
    return refusal_reason(address) is None


def _first_match(table: tuple[tuple[IPNetwork, str], ...], address: IPAddress) -> str | None:
    for network, reason in table:
        if network.version == address.version and address in network:
            return reason
    return None


def _in_any(networks: tuple[IPNetwork, ...], address: IPAddress) -> bool:
    return any(net.version == address.version and address in net for net in networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses stembot may connect to when fetching a user's URL.

    Public addresses always (``refusal_reason`` is None); with ``allow_private``
    (STEMBOT_ALLOW_PRIVATE_URLS) any unicast address. ``NEVER_ALLOWED`` stays refused.
    """

    allow_private: bool = False

    def permits(self, address: str | IPAddress) -> bool:
        parsed = parse_address(address)
        if parsed is None:
            return False
        if any(_in_any(NEVER_ALLOWED, a) for a in (parsed, *embedded_ipv4(parsed))):
            return False
        if self.allow_private:
            return True
        return is_global_address(parsed)
