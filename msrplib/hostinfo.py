"""What this machine is called on the network: the default outbound address.

Kept apart from :mod:`msrplib.protocol` so that the protocol layer needs no
socket of its own.
"""

import socket

__all__ = ['default_host_ip']

_PROBE_ADDRESS = ('192.0.2.1', 9)  # TEST-NET-1: routed like any outside address, never contacted


def default_host_ip():
    """Return this machine's default outbound IPv4 address as a string.

    Connecting a UDP socket sends nothing; it only asks the kernel which local
    address would be used.  Returns ``'127.0.0.1'`` when there is no route.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE_ADDRESS)
            return probe.getsockname()[0]
    except OSError:
        return '127.0.0.1'
