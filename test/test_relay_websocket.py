"""GreenMSRPSession over WebSocket (RFC 7977) through a real Kamailio relay (issue 22).

The WebSocket end reaches Kamailio's ws:// or wss:// listener
(``KamailioRelay.ws_url`` / ``wss_url``, subprotocol msrp) with
``MSRPRelaySettings(ws_url=...)``; the far end is a TCP/TLS client of the
same relay, a peer without a relay, or another WebSocket client.  Only the
routing script (msrplib/testing/kamailio.cfg.in) is ours; Kamailio's
TCP/TLS/WebSocket settings are its defaults.  Large messages are streamed
from a seeded generator and hashed as they arrive (test_relay_large's
helpers).  ``HUGE`` (100 MiB, MSRP_WS_HUGE) is the size of the issue's
acceptance transfers over wss, ``MEDIUM`` (8 MiB, MSRP_WS_MEDIUM) that of
the other topologies.  Every blocking call runs under a gevent.Timeout.
"""

import os
import time

import gevent
import pytest

from msrplib.testing import KamailioRelay
from msrplib.testing.pytest_plugin import require_kamailio

from test_relay import RecordingLogger, assert_ended, chat, connect, say, wait_for_refreshes
from test_relay_large import HashingSink, SeededStream, seeded_sha256

from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.message import DEFAULT_RELAY_CHUNK_SIZE, MessageAssembler
from msrplib.protocol import URI
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPRelayAuthError
from msrplib.websocket import WebSocketHandshakeError

MiB = 1024 * 1024
HUGE = int(os.environ.get('MSRP_WS_HUGE', 100 * MiB))
MEDIUM = int(os.environ.get('MSRP_WS_MEDIUM', 8 * MiB))
STEP = 10
TRANSFER_TIMEOUT = 300

pytestmark = pytest.mark.timeout(TRANSFER_TIMEOUT + 60)

#: how one end reaches the relay: over ws, wss, tcp or tls (plain MSRP)
ENDS = {'ws': dict(tls=False, ws=True), 'wss': dict(tls=True, ws=True),
        'tcp': dict(tls=False), 'tls': dict(tls=True)}


@pytest.fixture(scope='module')
def relay():
    require_kamailio()
    r = KamailioRelay(debug=1).__enter__()  # warnings only: no log line per frame
    yield r
    r.close()


@pytest.fixture(scope='module')
def short_relay():
    """A relay granting reservations of 2 to 6 seconds."""
    require_kamailio()
    r = KamailioRelay(min_expires=2, max_expires=6).__enter__()
    yield r
    r.close()


def _assembler(sinks):
    def open_file(message):
        sinks.append(HashingSink())
        return sinks[-1]
    return MessageAssembler(max_message_size=1024 * MiB, open_file=open_file)


def pair(relay, closing, connector_end, acceptor_end, sinks=None, **settings):
    """Sessions (connector's, acceptor's) through ``relay``, each end over ws/wss/tcp/tls;
    the acceptor reassembles large messages into HashingSinks appended to ``sinks``."""
    connector = ConnectorRelay(relay.settings(**ENDS[connector_end], **settings))
    acceptor = AcceptorRelay(relay.settings(**ENDS[acceptor_end], **settings))
    assembler = _assembler(sinks) if sinks is not None else None
    sa, sb = connect(connector, acceptor, closing, assembler=assembler)
    return connector, acceptor, sa, sb


def check_websocket_end(end, session, secure):
    """A WebSocket end advertises Use-Path on the relay's TCP/TLS face + its own ``.invalid`` URI with ;ws."""
    path = session.msrp.full_local_path
    assert path == end.use_path + [session.msrp.local_uri]
    own = session.msrp.local_uri
    assert own.host.endswith('.invalid')
    assert own.transport == 'ws'
    assert own.scheme == ('msrps' if secure else 'msrp')
    assert end.use_path[0].transport == 'tcp'


def transfer(sender, receiver, sinks, size, seed):
    """``sender`` streams ``size`` seeded bytes; ``receiver`` gets them whole (sha256), every byte reported."""
    with gevent.Timeout(TRANSFER_TIMEOUT):
        message = sender.send_large_message(SeededStream(size, seed), 'application/octet-stream')
        assert message.chunk_size == DEFAULT_RELAY_CHUNK_SIZE
        received = receiver.receive_chunk()
        message.wait()
    assert received.size == size
    assert len(sinks) == 1 and sinks[0].written == size
    assert sinks[0].digest.hexdigest() == seeded_sha256(size, seed)
    assert message.confirmed
    assert message.bytes_confirmed == size
    sinks.clear()


# ---------------------------------------------------------------------------
# Chat with success reports


@pytest.mark.parametrize('connector_end, acceptor_end', [
    ('ws', 'tcp'), ('wss', 'tls'), ('wss', 'tcp'), ('tcp', 'ws'), ('tls', 'wss'),
    ('ws', 'ws'), ('wss', 'wss'), ('ws', 'wss')])
def test_chat_through_kamailio(relay, closing, connector_end, acceptor_end):
    connector, acceptor, sa, sb = pair(relay, closing, connector_end, acceptor_end)
    for end, session, kind in ((connector, sa, connector_end), (acceptor, sb, acceptor_end)):
        if kind in ('ws', 'wss'):
            check_websocket_end(end, session, kind == 'wss')
            # the reservation is on the relay's TCP (ws) or TLS (wss) face, where the far end reaches it
            assert end.use_path[0].port == (relay.tls_port if kind == 'wss' else relay.port)
    chat(sa, sb)   # three messages, each with its Success-Report back
    received = say(sa, sb, 'over the relay, with a report')
    assert received.from_path == acceptor.use_path + connector.use_path + [sa.msrp.local_uri]


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_websocket_end_with_a_peer_without_relay(relay, closing, secure):
    """The relay opens the TCP/TLS connection to a far end that listens on its own URI."""
    connector = ConnectorRelay(relay.settings(tls=secure, ws=True))
    sa, sb = connect(connector, AcceptorDirect(), closing,
                     acceptor_uri=URI(host=relay.host, port=0, use_tls=secure))
    check_websocket_end(connector, sa, secure)
    assert sb.msrp.getPeer().host == relay.host
    chat(sa, sb)


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_peer_without_relay_connects_to_a_websocket_ends_reservation(relay, closing, secure):
    """The far end connects directly to the Use-Path the WebSocket end advertised: the relay's TCP/TLS face."""
    acceptor = AcceptorRelay(relay.settings(tls=secure, ws=True))
    uri = URI(host=relay.host, use_tls=secure, credentials=relay.client_ssl_context() if secure else None)
    sa, sb = connect(ConnectorDirect(), acceptor, closing, connector_uri=uri)
    assert sa.msrp.getPeer().port == (relay.tls_port if secure else relay.port)
    chat(sa, sb)


# ---------------------------------------------------------------------------
# Large messages


@pytest.mark.parametrize('connector_end, acceptor_end', [('ws', 'tcp'), ('tcp', 'ws'), ('ws', 'ws')])
def test_large_message_over_ws(relay, closing, connector_end, acceptor_end):
    sinks = []
    _, _, sa, sb = pair(relay, closing, connector_end, acceptor_end, sinks)
    transfer(sa, sb, sinks, MEDIUM, seed=22)


def test_huge_file_both_ways_between_wss_and_tcp(relay, closing):
    """The issue's acceptance criterion: 100 MiB over wss through Kamailio to a TCP peer, and back."""
    sinks_b = []
    _, _, sa, sb = pair(relay, closing, 'wss', 'tcp', sinks_b)
    transfer(sa, sb, sinks_b, HUGE, seed=221)
    sinks_a = []
    _, _, ta, tb = pair(relay, closing, 'tcp', 'wss', sinks_a)
    transfer(ta, tb, sinks_a, HUGE, seed=222)


def test_huge_file_both_ways_between_two_wss_ends(relay, closing):
    """The issue's acceptance criterion: 100 MiB over wss through Kamailio to a WebSocket peer, and back."""
    sinks = []
    _, _, sa, sb = pair(relay, closing, 'wss', 'wss', sinks)
    transfer(sa, sb, sinks, HUGE, seed=223)
    sinks_back = []
    _, _, ta, tb = pair(relay, closing, 'wss', 'wss', sinks_back)
    transfer(ta, tb, sinks_back, HUGE, seed=224)


# ---------------------------------------------------------------------------
# AUTH refresh over WebSocket


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_refresh_over_websocket_while_the_session_works(short_relay, closing, secure):
    logger = RecordingLogger()
    connector = ConnectorRelay(short_relay.settings(tls=secure, ws=True, expires=2), logger=logger)
    acceptor = AcceptorRelay(short_relay.settings(tls=False, expires=6))
    sa, sb = connect(connector, acceptor, closing)
    started = time.monotonic()
    assert connector.expires == 2
    advertised = list(connector.use_path)
    say(sa, sb, 'before the refresh')
    say(sb, sa, 'answer before the refresh')
    wait_for_refreshes(connector, 1)
    say(sa, sb, 'after the refresh')
    say(sb, sa, 'answer after the refresh')
    assert time.monotonic() - started < 2, 'too slow: the first reservation expired meanwhile'
    # every counted refresh is an AUTH over the WebSocket that Kamailio answered 200
    assert short_relay.log_text().count('MSRP AUTH ok') >= 2 + connector.refreshes
    assert connector.use_path == advertised
    assert not [line for level, line in logger.lines if level == 'warning']
    assert sa.connected and sb.connected


# ---------------------------------------------------------------------------
# Failures


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_wrong_password_over_websocket_is_an_auth_error(relay, closing, secure):
    connector = ConnectorRelay(relay.settings(tls=secure, ws=True, password='wrong'))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayAuthError) as info:
        connector.prepare()
    assert info.value.code == 401


def test_an_msrp_port_refuses_the_websocket_handshake(relay, closing):
    """ws_url pointing at Kamailio's MSRP TCP port: the script answers the upgrade with HTTP 403."""
    connector = ConnectorRelay(relay.settings(ws=True, ws_url='ws://%s:%d/' % (relay.host, relay.port)))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(WebSocketHandshakeError) as info:
        connector.prepare()
    assert info.value.status_code == 403


def test_relay_killed_mid_session_ends_both_websocket_sessions(closing):
    require_kamailio()
    with KamailioRelay() as doomed:
        _, _, sa, sb = pair(doomed, closing, 'wss', 'ws')
        say(sa, sb, 'before the crash')
        doomed.kill()
        assert_ended(sa)
        assert_ended(sb)
