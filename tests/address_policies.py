"""Address policies for tests whose servers listen on loopback addresses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stembot.address_policy import AddressPolicy, IPAddress, IPNetwork, parse_address

_UNICAST = AddressPolicy(allow_private=True)


@dataclass(frozen=True)
class AllowingPolicy(AddressPolicy):
    """stembot's policy, plus exactly the networks named (never what it refuses outright), so
    a test can serve from 127.0.0.1 while its neighbour 127.0.0.2 stays refused."""

    also_allow: tuple[IPNetwork, ...] = ()

    def permits(self, address: str | IPAddress) -> bool:
        if super().permits(address):
            return True
        parsed = parse_address(address)
        if parsed is None or not any(parsed in network for network in self.also_allow):
            return False
        return _UNICAST.permits(parsed)


def allowing(*networks: str) -> AllowingPolicy:
    return AllowingPolicy(also_allow=tuple(ipaddress.ip_network(n) for n in networks))
