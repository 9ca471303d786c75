"""Large messages through Kamailio to a receiver behind a real 1500-byte-MTU link (issue 18).

Over loopback the kernel buffers on Kamailio's connection to the receiver hold
megabytes; over a real link they hold a few tens of KB, and Kamailio (default
settings) drops frames once its 32 KiB per-connection write queue is full.
These tests run the transfers of ``test/relay/netns_probe.py`` (its
``transfer()``): the receiver process in a network namespace joined to the
host by a veth pair at MTU 1500, Kamailio on the host's veth address, the
sender here, both ends through the relay, 32 MiB as one message.  Each checks
that the message was confirmed, that the receiver got every byte, and that
Kamailio logged no dropped frame meanwhile.  A control shows the check fails
when the receiver's window is set beyond what the path holds.

Needs root, iproute2 (``ip``) and network namespaces; skipped otherwise.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from msrplib.testing import KamailioRelay
from msrplib.testing.pytest_plugin import require_kamailio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'relay'))

import netns_probe  # noqa: E402

MiB = 1024 * 1024
SIZE = 32 * MiB
MTU = 1500
#: Bound for each wait of a transfer (the receiver starting, the connection, the whole message).
TIMEOUT = 30
#: The control's receiver: a relay path taken to hold 4 MiB, so the sender keeps 1 MiB in flight.
CONTROL_PATH_BYTES = 4 * MiB
#: Transfers the control tries until one fails.  Each fails with a probability of about 2/3 (40 runs measured):
#: the chance that all pass is below 0.1 %.  A passing one takes under a second, a failing one CONTROL_REPORT_TIMEOUT.
CONTROL_ATTEMPTS = 8
CONTROL_REPORT_TIMEOUT = 5


@pytest.fixture(scope='module')
def path():
    """(relay, link): Kamailio listening on the host's end of a veth pair (MTU 1500) into a network namespace."""
    if os.geteuid() != 0:
        pytest.skip('needs root: it makes a network namespace and a veth pair')
    if shutil.which('ip') is None:
        pytest.skip('needs iproute2 (the ip command)')
    require_kamailio()
    try:
        link = netns_probe.Link(MTU)
    except subprocess.CalledProcessError as e:
        pytest.skip('cannot make a network namespace and a veth pair: %s: %s'
                    % (' '.join(e.cmd), (e.stderr or '').strip()))
    try:
        with KamailioRelay(host=link.host_ip, debug=1) as relay:  # warnings only: the drops, no line per frame
            yield relay, link
    finally:
        link.close()


def assert_delivered(path, **options):
    relay, link = path
    confirmed, seconds, comment, dropped = netns_probe.transfer(relay, link, SIZE, timeout=TIMEOUT, **options)
    assert confirmed, 'not confirmed after %.1f s: %s; Kamailio dropped frames: %s' % (seconds, comment, dropped)
    assert json.loads(comment) == {'size': SIZE, 'written': SIZE}
    assert dropped == []


def test_tcp(path):
    assert_delivered(path)


def test_tls(path):
    assert_delivered(path, tls=True)


def test_tcp_receiver_stops_reading(path):
    # the receiver's process sleeps for 3 s once it has 256 KiB: nothing is read meanwhile
    assert_delivered(path, stall_after=256 * 1024, stall_for=3)


def test_tls_slow_receiver(path):
    assert_delivered(path, tls=True, rate=20)


def test_control_window_beyond_the_path_overflows_the_relay(path):
    # The check above can fail: a receiver that takes the relay's connection to hold 4 MiB lets the sender keep
    # 1 MiB in flight (four steps of 256 KiB), which a 1500-byte-MTU path and Kamailio's queue do not hold.
    relay, link = path
    outcomes = []
    for attempt in range(CONTROL_ATTEMPTS):
        confirmed, seconds, comment, dropped = netns_probe.transfer(
            relay, link, SIZE, path_bytes=CONTROL_PATH_BYTES, report_timeout=CONTROL_REPORT_TIMEOUT, timeout=TIMEOUT)
        outcomes.append((confirmed, round(seconds, 1), comment[:100], dropped[:1]))
        if dropped or not confirmed:
            break
    assert dropped or not confirmed, 'every transfer passed: %s' % outcomes
