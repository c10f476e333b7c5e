"""Userspace link emulation (delay, jitter, loss, rate cap) for kernels without sch_netem.

Why: without netem, Mininet's TCLink(delay=...) prints an error and applies no delay. Here a
small C relay (lblab_relay.c -> build/lblab-relay) joins a link's two veth ends with AF_PACKET
sockets and emulates the link in userspace, one process per link.

Only `node.py` imports Mininet; import it lazily (`from topologies.relay.node import RelaySwitch`).
"""
from topologies.relay.link import (  # noqa: F401
    PID_DIR,
    RelayBinaryMissing,
    RelayParams,
    prepare_relay_interface,
    relay_binary_path,
    relay_command,
    stop_relay_pid,
    stop_relays_from_pidfiles,
    read_stats,
)
