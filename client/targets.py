"""Where a client's channel connects: one address, several, or a DNS name spread round robin.

gRPC takes one target string. Several addresses become its `ipv4:`/`ipv6:` list form, and both
that and a `dns:///` name get the round_robin policy, so calls spread over every replica instead
of all riding the first connection (gRPC's default, pick_first):

>>> channel_target(["127.0.0.1:50051", "127.0.0.1:50052"])
ChannelTarget(target='ipv4:127.0.0.1:50051,127.0.0.1:50052', options=(('grpc.lb_policy_name', 'round_robin'),))
>>> channel_target("dns:///rnn-sentiment-headless:50051").options
(('grpc.lb_policy_name', 'round_robin'),)
>>> channel_target("127.0.0.1:50051").options
()
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Sequence

ROUND_ROBIN = (("grpc.lb_policy_name", "round_robin"),)

# Keepalive that a default gRPC server accepts: it answers pings more often than every 5 minutes
# without calls in flight with GOAWAY ("too_many_pings"), so pings go only while calls are open and
# no more often than that. Finds a connection whose peer vanished (no FIN) before a deadline does.
KEEPALIVE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


@dataclass(frozen=True)
class ChannelTarget:
    """A gRPC target string and the channel options it implies."""

    target: str
    options: tuple[tuple[str, Any], ...]


def _ip_family(address: str) -> str:
    """"ipv4" or "ipv6" for an "ip:port" (IPv6 in brackets); ValueError for a host name."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return f"ipv{ipaddress.ip_address(host).version}"
    except ValueError:
        raise ValueError(
            f"several targets must be IP addresses (got {address!r}); for host names use one "
            f"'dns:///name:port' target, which resolves to every address of the name"
        ) from None


def channel_target(target: str | Sequence[str]) -> ChannelTarget:
    """The target string for `target` (one "host:port", a gRPC URI, or a list of "ip:port")."""
    if isinstance(target, str):
        spread = target.startswith("dns:") or target.startswith(("ipv4:", "ipv6:")) and "," in target
        return ChannelTarget(target, ROUND_ROBIN if spread else ())
    addresses = list(target)
    if not addresses:
        raise ValueError("no target given")
    if len(addresses) == 1:
        return channel_target(addresses[0])
    families = {_ip_family(a) for a in addresses}
    if len(families) > 1:
        raise ValueError("several targets must all be IPv4 or all IPv6 (gRPC's address lists are one family)")
    return ChannelTarget(f"{families.pop()}:{','.join(addresses)}", ROUND_ROBIN)
