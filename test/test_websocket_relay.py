"""Sessions through a WebSocket relay (RFC 7977): ConnectorRelay/AcceptorRelay with MSRPRelaySettings(ws_url=...).

The relay is msrplib.testing's ScriptedWebSocketRelay (real sockets on
loopback, real TLS for wss, real digest AUTH); the tests against Kamailio
are in test_websocket_kamailio.py.  Every wait is under a timeout.
"""

import hashlib
import os

import gevent
import pytest

from msrplib.connect import ConnectorDirect
from msrplib.message import DEFAULT_RELAY_CHUNK_SIZE, MessageAssembler
from msrplib.protocol import URI
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPRelayAuthError, MSRPRelaySettings
from msrplib.testing.wsrelay import ScriptedWebSocketRelay
from msrplib.websocket import MSRPWebSocketError, is_invalid_host

from test_relay import connect as relay_connect

STEP = 10
SCHEMES = [pytest.param(False, id='ws'), pytest.param(True, id='wss')]


@pytest.fixture(params=SCHEMES)
def relay(request):
    with ScriptedWebSocketRelay(tls=request.param) as r:
        yield r


@pytest.fixture
def ws_relay():
    with ScriptedWebSocketRelay() as r:
        yield r


def connect(connector, acceptor, closing, **options):
    """test_relay's connect(); returns both sessions and both paths."""
    return relay_connect(connector, acceptor, closing, return_paths=True, **options)


def say(sender, receiver, text):
    with gevent.Timeout(STEP):
        sender.send_message(text, 'text/plain')
        chunk = receiver.receive_chunk()
    assert chunk.method == 'SEND' and chunk.data == text.encode()


def chat(sa, sb):
    say(sa, sb, 'hello from a')
    say(sb, sa, 'hello from b \N{SNOWMAN}')


def assert_websocket_path(path, relay, tls):
    *use_path, own = path
    assert own.transport == 'ws' and is_invalid_host(own.host) and own.use_tls == tls
    assert own.session_id
    assert [uri.port for uri in use_path] == [relay.tcp_port]  # the relay's MSRP face, reachable over TCP


def test_both_ends_over_websocket_chat(relay, closing):
    sa, sb, pa, pb = connect(ConnectorRelay(relay.settings()), AcceptorRelay(relay.settings()), closing)
    assert_websocket_path(pa, relay, relay.tls)
    assert_websocket_path(pb, relay, relay.tls)
    assert pa[-1].host != pb[-1].host
    chat(sa, sb)
    assert all(client.websocket for client in relay.clients)


def test_websocket_end_and_tcp_end_through_the_same_relay(relay, closing):
    sa, sb, pa, pb = connect(ConnectorRelay(relay.settings(ws=True)), AcceptorRelay(relay.settings(ws=False)),
                             closing)
    assert_websocket_path(pa, relay, relay.tls)
    assert pb[-1].transport == 'tcp' and not is_invalid_host(pb[-1].host)
    chat(sa, sb)


def test_tcp_peer_without_relay_reaches_a_websocket_acceptor(ws_relay, closing):
    uri = URI(host='127.0.0.1', use_tls=False)
    sa, sb, pa, pb = connect(ConnectorDirect(), AcceptorRelay(ws_relay.settings()), closing, connector_uri=uri)
    assert pa == [uri]
    chat(sa, sb)


def test_each_chunk_travels_in_one_websocket_message(ws_relay, closing):
    sa, sb, pa, pb = connect(ConnectorRelay(ws_relay.settings()), AcceptorRelay(ws_relay.settings()), closing)
    for i in range(20):
        say(sa, sb, 'message %d' % i)
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(100000), 'application/octet-stream')
        sb.receive_chunk()
        message.wait()
    for client in ws_relay.clients:
        # the relay parsed as many chunks as it got messages: none split over messages, none joined
        assert client.chunks_received == client.sock.connection.messages_received > 0


def test_large_message_over_websocket_with_reports(relay, closing):
    size = 3 * 1024 * 1024 + 17
    received = []
    assembler = MessageAssembler()
    sa, sb, pa, pb = connect(ConnectorRelay(relay.settings()), AcceptorRelay(relay.settings()), closing,
                             assembler=assembler)
    data = os.urandom(size)
    with gevent.Timeout(60):
        message = sa.send_large_message(data, 'application/octet-stream', success_report=True)
        assert message.chunk_size == DEFAULT_RELAY_CHUNK_SIZE
        received.append(sb.receive_chunk())
        message.wait()
    assert message.confirmed and message.bytes_confirmed == size
    assert hashlib.sha256(received[0].data).digest() == hashlib.sha256(data).digest()
    chat(sa, sb)


def test_relay_chunk_size_is_used_over_websocket(ws_relay, closing):
    sa, sb, pa, pb = connect(ConnectorRelay(ws_relay.settings(chunk_size=1000)), AcceptorRelay(ws_relay.settings()),
                             closing, assembler=MessageAssembler())
    with gevent.Timeout(STEP):
        message = sa.send_large_message(b'y' * 5000, 'application/octet-stream')
        sb.receive_chunk()
        message.wait()
    assert message.chunk_size == 1000
    sender = [c for c in ws_relay.clients if c.use_path == pa[0]][0]
    assert sender.chunks_received >= 6  # binding SEND + 5 chunks of 1000 bytes


def test_reservation_is_refreshed_over_websocket_while_chatting(ws_relay, closing, monkeypatch):
    monkeypatch.setattr(ConnectorRelay, 'CLOSED_CHECK_INTERVAL', 0.1)
    connector = ConnectorRelay(ws_relay.settings(expires=1))
    sa, sb, pa, pb = connect(connector, AcceptorRelay(ws_relay.settings()), closing)
    with gevent.Timeout(STEP):
        while connector.refreshes < 2:
            say(sa, sb, 'still here')
            gevent.sleep(0.2)
    client = [c for c in ws_relay.clients if c.use_path == pa[0]][0]
    assert client.auth_count >= 3
    chat(sa, sb)


def test_wrong_password_is_an_auth_error(ws_relay, closing):
    connector = ConnectorRelay(ws_relay.settings(password='wrong'))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayAuthError) as info:
        connector.prepare()
    assert info.value.code == 401


def test_given_local_uri_gets_the_websocket_transport_and_an_invalid_host(ws_relay, closing):
    connector = ConnectorRelay(ws_relay.settings())
    closing.append(connector)
    uri = URI(host='192.0.2.1', port=0, use_tls=True, session_id='abc')
    with gevent.Timeout(STEP):
        path = connector.prepare(uri)
    assert path[-1] is uri
    assert uri.transport == 'ws' and is_invalid_host(uri.host) and not uri.use_tls and uri.port
    assert str(uri).endswith('/abc;ws')


def test_direct_connection_to_a_websocket_uri_is_refused_clearly(closing):
    connector = ConnectorDirect()
    closing.append(connector)
    connector.prepare(URI(host='127.0.0.1', use_tls=False))
    with gevent.Timeout(STEP), pytest.raises(MSRPWebSocketError, match='only through its relay'):
        connector.complete([URI.parse('msrp://k3x9q0a7b2m1.invalid:2855/abc;ws')])


def test_relay_settings_with_a_websocket_url():
    settings = MSRPRelaySettings('example.com', 'alice', 'pw', ws_url='wss://relay.example.com:8443/msrp')
    assert settings.is_websocket and settings.use_tls
    assert str(settings.uri_domain) == 'msrps://example.com:8443;ws'
    assert MSRPRelaySettings('example.com', 'a', 'p', ws_url='ws://h/').use_tls is False
    assert not MSRPRelaySettings('example.com', 'a', 'p').is_websocket
    with pytest.raises(ValueError):
        MSRPRelaySettings('example.com', 'a', 'p', ws_url='http://h/')
    with pytest.raises(ValueError):
        MSRPRelaySettings('example.com', 'a', 'p', ws_url='ws://h/', use_tls=True)
    assert 'ws_url' in repr(settings)


def test_relay_down_is_a_connect_error_naming_the_url(closing):
    from msrplib.relay import MSRPRelayConnectError
    import socket
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    connector = ConnectorRelay(MSRPRelaySettings('example.com', 'a', 'p', ws_url='ws://127.0.0.1:%d/' % port))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayConnectError, match='ws://127.0.0.1'):
        connector.prepare()


def test_wss_certificate_from_an_untrusted_ca_is_refused(closing):
    from msrplib.tls import MSRPCertificateError
    with ScriptedWebSocketRelay(tls=True) as relay:
        connector = ConnectorRelay(relay.settings(credentials=None))
        closing.append(connector)
        with gevent.Timeout(STEP), pytest.raises(MSRPCertificateError):
            connector.prepare()


@pytest.mark.parametrize('tls', [False, True], ids=['ws', 'wss'])
def test_session_pair_through_the_scripted_relay_runs_over_websocket(tls):
    from msrplib.testing import session_pair
    with ScriptedWebSocketRelay(tls=tls) as relay:
        with session_pair(tls=tls, relay=relay) as (active, passive):
            assert active.msrp.local_uri.transport == passive.msrp.local_uri.transport == 'ws'
            chat(active, passive)
        with pytest.raises(ValueError):
            relay.settings(not tls)
