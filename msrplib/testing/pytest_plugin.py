"""The msrplib pytest plugin (entry point ``pytest11``: ``msrplib``): fixtures over :mod:`msrplib.testing`.

Installing msrplib gives every pytest suite these fixtures, with no conftest:

``msrp_session_pair``
    A factory: ``active, passive = msrp_session_pair(tls=False, relay=None,
    cls=GreenMSRPSession, **session_kwargs)``; the sessions are closed when
    the test ends.
``msrp_raw_peer``
    A factory: ``msrp_raw_peer(tls=False, timeout=10)`` -> a
    :class:`~msrplib.testing.RawPeer`, closed when the test ends.
``msrp_relay``
    A real Kamailio relay for the whole session
    (:class:`~msrplib.testing.KamailioRelay`): the test is skipped when
    Kamailio is not installed, and fails instead when ``CI=true``.
``msrp_wire``
    A :class:`~msrplib.testing.WireCapture`; ``msrp_wire.watch(session)``.

msrplib.testing is imported when a fixture is first used, so a suite that
uses none of them pays nothing.
"""

import os

import pytest


def require_kamailio():
    """Skip the test when Kamailio is not installed; fail it instead under ``CI=true``."""
    from msrplib.testing.kamailio import INSTALL_COMMAND, kamailio_available
    if kamailio_available():
        return
    message = 'Kamailio with the msrp and tls modules is not installed (%s)' % INSTALL_COMMAND
    if os.environ.get('CI') == 'true':
        pytest.fail(message + '; it is required when CI=true')
    pytest.skip(message)


@pytest.fixture
def msrp_session_pair():
    """Factory of connected, bound session pairs over loopback; each pair is closed at the end of the test."""
    from msrplib.testing.loopback import session_pair
    opened = []

    def make(*args, **kwargs):
        context = session_pair(*args, **kwargs)
        pair = context.__enter__()
        opened.append(context)
        return pair
    yield make
    for context in reversed(opened):
        context.__exit__(None, None, None)


@pytest.fixture
def msrp_raw_peer():
    """Factory of :class:`~msrplib.testing.RawPeer` s (same arguments); each is closed at the end of the test."""
    from msrplib.testing.rawpeer import RawPeer
    peers = []

    def make(*args, **kwargs):
        peer = RawPeer(*args, **kwargs)
        peers.append(peer)
        return peer
    yield make
    for peer in peers:
        peer.close()


@pytest.fixture(scope='session')
def msrp_relay():
    """One real Kamailio MSRP relay for the test session (TCP and TLS listeners, one account)."""
    require_kamailio()
    from msrplib.testing.kamailio import KamailioRelay
    with KamailioRelay() as relay:
        yield relay


@pytest.fixture
def msrp_wire():
    """A :class:`~msrplib.testing.WireCapture`; the transports it watches are given back their loggers at the end."""
    from msrplib.testing.wire import WireCapture
    with WireCapture() as capture:
        yield capture
