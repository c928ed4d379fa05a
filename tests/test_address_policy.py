"""The URL guard's address policy: explicit tables, the same answer on every Python."""

from __future__ import annotations

import ast
import inspect
import ipaddress
from pathlib import Path

import pytest

from stembot import address_policy
from stembot.address_policy import (
    REFUSED_IPV4,
    REFUSED_IPV6,
    AddressPolicy,
    embedded_ipv4,
    is_global_address,
    parse_address,
    refusal_reason,
)
from tests.address_policies import allowing

# One address per case the policy decides, with the words its refusal names.
REFUSED = [
    ("0.1.2.3", "'this network'"),
    ("10.1.2.3", "private-use"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.31.255.255", "private-use"),
    ("192.0.0.9", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.0.1", "private-use"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::7f00:1", "IPv4-compatible"),
    ("::ffff:0:7f00:1", "IPv4-translated"),
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("100::1", "discard-only"),
    ("5f00::1", "SRv6"),
    ("fd00::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff0e::1", "multicast"),
    ("4000::1", "outside the global unicast space"),
    ("2001:2::1", "IETF protocol assignments"),  # benchmarking
    ("2001:10::1", "IETF protocol assignments"),  # ORCHID
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    # Forms that carry an IPv4 address are judged by it.
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, private-use"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, link-local"),
    ("2002:c0a8:101::1", "6to4 form of 192.168.1.1, private-use"),
    ("2002:6440::1", "6to4 form of 100.64.0.0, shared address space"),
    # Teredo: server 65.54.227.120 (public), client ~3fff:fdd2 = 192.0.2.45 (documentation).
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo form of 192.0.2.45, documentation"),
    # Teredo through a private server.
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "Teredo form of 10.0.0.1, private-use"),
]

ALLOWED = [
    "8.8.8.8",
    "100.63.255.255",  # just below carrier-grade NAT
    "100.128.0.0",  # just above it
    "172.32.0.1",
    "192.0.1.1",
    "198.17.255.255",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2620:4f:8000::1",  # AS112, globally reachable
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    # Teredo with a public server (65.54.227.120) and a public client (~f7f7:f7f7 = 8.8.8.8).
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refused_addresses_name_their_registry_entry(address: str, reason: str) -> None:
    """Each special-purpose block is refused, and the refusal says which block it is."""
    parsed = parse_address(address)
    assert parsed is not None
    found = refusal_reason(parsed)
    assert found is not None and reason in found, found
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_and_their_wrapped_forms_are_allowed(address: str) -> None:
    """Public unicast, bare or carried by a mapped, NAT64, 6to4 or Teredo address, passes."""
    assert refusal_reason(ipaddress.ip_address(address)) is None
    assert AddressPolicy().permits(address)


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:1.2.3.4", ["1.2.3.4"]),
        ("64:ff9b::102:304", ["1.2.3.4"]),
        ("2002:102:304:5::6", ["1.2.3.4"]),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", ["65.54.227.120", "8.8.8.8"]),
        ("2606:4700::1", []),
        ("1.2.3.4", []),
    ],
)
def test_embedded_ipv4_unwraps_each_form(address: str, carried: list[str]) -> None:
    """The IPv4 address inside each wrapping form is found by the policy's own arithmetic."""
    assert [str(a) for a in embedded_ipv4(ipaddress.ip_address(address))] == carried


@pytest.mark.parametrize("table", [REFUSED_IPV4, REFUSED_IPV6], ids=["ipv4", "ipv6"])
def test_every_row_of_the_tables_refuses_its_whole_block(table) -> None:
    """The first and last address of every listed block are refused (unless a wrapping form
    inside the block takes over, as Teredo does inside 2001::/23)."""
    for network, reason in table:
        for address in (network.network_address, network.broadcast_address):
            if embedded_ipv4(address):
                continue
            assert refusal_reason(address) == reason, (network, address)


_INTERPRETER_ANSWERS = (
    "is_global",
    "is_private",
    "is_reserved",
    "is_link_local",
    "is_loopback",
    "is_site_local",
    "is_multicast",
    "is_unspecified",
    "sixtofour",
    "teredo",
    "ipv4_mapped",
)


def test_the_policy_never_asks_the_interpreter_what_an_address_is() -> None:
    """The module that decides uses none of ipaddress's classification properties, whose
    answers changed between Python releases (6to4 on 3.11.2 and 3.13, for one)."""
    tree = ast.parse(Path(inspect.getsourcefile(AddressPolicy) or "").read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert used.isdisjoint(_INTERPRETER_ANSWERS), used & set(_INTERPRETER_ANSWERS)


def test_the_answers_do_not_change_when_the_interpreter_changes_its_mind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ipaddress's own classification turned upside down, every decision stays put."""
    before = {a: AddressPolicy().permits(a) for a, _ in REFUSED} | {
        a: AddressPolicy().permits(a) for a in ALLOWED
    }

    def upside_down(name: str) -> property:
        return property(lambda self: "global" not in name)

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in ("is_global", "is_private", "is_reserved", "is_multicast", "is_unspecified"):
            monkeypatch.setattr(cls, name, upside_down(name))
    after = {a: AddressPolicy().permits(a) for a in before}
    assert after == before


def test_allow_private_still_refuses_wrapped_multicast_and_unspecified() -> None:
    """STEMBOT_ALLOW_PRIVATE_URLS opens private unicast, never multicast or 0.0.0.0, even
    when an IPv6 form carries them."""
    policy = AddressPolicy(allow_private=True)
    assert policy.permits("::ffff:10.0.0.1")
    for address in ("::ffff:224.0.0.1", "64:ff9b::", "::ffff:255.255.255.255", "ff05::2"):
        assert not policy.permits(address), address


def test_the_policy_module_stands_alone() -> None:
    """The guard's decision is one short module with no project imports, for one reading."""
    source = Path(inspect.getsourcefile(address_policy) or "").read_text()
    assert "from stembot" not in source and "import stembot" not in source
    assert len(source.splitlines()) < 250


# ---------------------------------------------------------------------------------------------
# Address classification
# ---------------------------------------------------------------------------------------------

NON_GLOBAL = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.0.0.2",
    "169.254.169.254",  # cloud metadata (link-local)
    "100.64.0.1",  # carrier-grade NAT: not private, not global either
    "100.127.255.254",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "192.0.2.1",  # documentation
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",  # benchmarking
    "192.88.99.1",  # deprecated 6to4 relay
    "240.0.0.1",  # reserved
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # deprecated site-local
    "ff02::1",  # multicast
    "ff0e::1",
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (RFC 9637)
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::7f00:1",  # deprecated IPv4-compatible loopback
    "64:ff9b::7f00:1",  # NAT64 of loopback
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of loopback
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]

GLOBAL = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize("address", NON_GLOBAL)
def test_non_global_addresses_are_refused(address):
    """Private, loopback, link-local, CGNAT, multicast, documentation and wrapped forms fail."""
    parsed = parse_address(address)
    assert parsed is not None
    assert not is_global_address(parsed)
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize("address", GLOBAL)
def test_global_addresses_are_allowed(address):
    """Public unicast addresses, bare or wrapped around a public IPv4 address, pass."""
    assert AddressPolicy().permits(address)


def test_allow_private_permits_private_unicast():
    """STEMBOT_ALLOW_PRIVATE_URLS lets LAN and loopback addresses through."""
    policy = AddressPolicy(allow_private=True)
    assert all(policy.permits(a) for a in ("10.0.0.1", "127.0.0.1", "::1", "fe80::1%eth0"))


def test_allow_private_still_refuses_multicast_and_unspecified():
    """No setting makes multicast or unspecified addresses a fetch target."""
    policy = AddressPolicy(allow_private=True)
    assert not any(policy.permits(a) for a in ("224.0.0.1", "ff02::1", "0.0.0.0", "::"))


def test_also_allow_admits_exactly_the_named_network():
    """A policy allowing 127.0.0.1/32 still refuses its neighbour 127.0.0.2."""
    policy = allowing("127.0.0.1/32")
    assert policy.permits("127.0.0.1")
    assert not policy.permits("127.0.0.2")


def test_unparsable_address_is_refused():
    """Anything that is not an IP address fails closed."""
    assert not AddressPolicy(allow_private=True).permits("localhost")
