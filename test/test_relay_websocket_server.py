"""The Kamailio test relay's WebSocket face (RFC 7977) works (wsproto + raw MSRP, no msrplib transport).

A WebSocket client here is test/relay/rawws.py: wsproto for the handshake
and the framing, hand-written MSRP frames (test/relay/rawmsrp.py) and
msrplib.digest for the AUTH.  A failure here means the relay's WebSocket
set-up (msrplib/testing/kamailio.cfg.in) is broken, not msrplib.  Skipped
when kamailio is not installed unless CI=true.  Every socket has a timeout.
test/relay/NOTES.md ("MSRP over WebSocket") has the transcripts.
"""

import os
import socket
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'relay'))

from msrplib.testing import KamailioRelay  # noqa: E402
from msrplib.testing.pytest_plugin import require_kamailio as _require_kamailio  # noqa: E402
from rawmsrp import RawClient, build_frame, build_response, new_id  # noqa: E402
from rawws import HandshakeRefused, RawWSClient, open_websocket  # noqa: E402

from msrplib import digest  # noqa: E402

TIMEOUT = 5.0


@pytest.fixture(scope='module')
def relay():
    _require_kamailio()
    with KamailioRelay(min_expires=30, max_expires=600) as r:
        yield r


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.close()


def _ws_relay_uri(relay, secure):
    """The relay URI a WebSocket client puts in its AUTH To-Path."""
    if secure:
        return 'msrps://%s:%d;ws' % (relay.host, relay.wss_port)
    return 'msrp://%s:%d;ws' % (relay.host, relay.ws_port)


def _ws_client(relay, clients, name, secure=False):
    if secure:
        c = RawWSClient(name, relay.host, relay.wss_port, use_tls=True,
                        ssl_context=relay.client_ssl_context(), timeout=TIMEOUT, log=None)
    else:
        c = RawWSClient(name, relay.host, relay.ws_port, timeout=TIMEOUT, log=None)
    clients.append(c)
    return c


def _ws_login(relay, clients, name, secure=False):
    c = _ws_client(relay, clients, name, secure)
    first, second = c.authenticate(_ws_relay_uri(relay, secure), relay.username, relay.password,
                                   digest=digest)
    assert first.code == 401
    assert second is not None and second.code == 200, second
    return c


def _tcp_login(relay, clients, name, tls=False):
    if tls:
        c = RawClient(name, relay.host, relay.tls_port, use_tls=True,
                      ssl_context=relay.client_ssl_context(), timeout=TIMEOUT, log=None)
    else:
        c = RawClient(name, relay.host, relay.port, timeout=TIMEOUT, log=None)
    clients.append(c)
    first, second = c.authenticate(relay.tls_uri if tls else relay.uri, relay.username,
                                   relay.password, digest=digest)
    assert second is not None and second.code == 200, second
    return c


def test_urls_and_ports(relay):
    ports = {relay.port, relay.tls_port, relay.ws_port, relay.wss_port}
    assert len(ports) == 4
    assert relay.ws_url == 'ws://%s:%d/' % (relay.host, relay.ws_port)
    assert relay.wss_url == 'wss://%s:%d/' % (relay.host, relay.wss_port)
    assert 'ws:%d' % relay.ws_port in repr(relay)


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_handshake_picks_the_msrp_subprotocol(relay, clients, secure):
    c = _ws_client(relay, clients, 'H', secure)
    assert c.subprotocol == 'msrp'


@pytest.mark.parametrize('offered', [(), ('sip',), ('chat', 'superchat')])
def test_handshake_without_msrp_is_refused(relay, offered):
    with pytest.raises(HandshakeRefused) as info:
        open_websocket(relay.host, relay.ws_port, subprotocols=offered, timeout=TIMEOUT)
    assert info.value.status == 400


def _http_status(host, port, request):
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.sendall(request)
        data = b''
        while b'\r\n' not in data:
            more = s.recv(4096)
            if not more:
                break
            data += more
    return data.split(b'\r\n', 1)[0]


def test_plain_http_get_is_404_and_upgrade_on_the_msrp_port_403(relay):
    get = b'GET / HTTP/1.1\r\nHost: %s\r\n\r\n' % relay.host.encode()
    assert _http_status(relay.host, relay.ws_port, get) == b'HTTP/1.1 404 Not Found'
    upgrade = (b'GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
               b'Sec-WebSocket-Protocol: msrp\r\n\r\n' % relay.host.encode())
    assert _http_status(relay.host, relay.port, upgrade) == b'HTTP/1.1 403 Forbidden'
    assert _http_status(relay.host, relay.ws_port, upgrade) == b'HTTP/1.1 101 Switching Protocols'


@pytest.mark.parametrize('secure', [False, True], ids=['ws', 'wss'])
def test_auth_over_websocket_gets_a_use_path_on_the_tcp_face(relay, clients, secure):
    c = _ws_client(relay, clients, 'A', secure)
    relay_uri = _ws_relay_uri(relay, secure)
    _, resp = c.auth(relay_uri)
    assert resp.code == 401
    assert resp.path('To-Path') == [c.uri]
    assert resp.path('From-Path') == [relay_uri]
    challenge = digest.parse_challenge(resp.header('WWW-Authenticate'))
    assert challenge['realm'] == relay.realm
    authz = digest.make_authorization(challenge, relay.username, relay.password, 'AUTH', relay_uri)
    _, resp = c.auth(relay_uri, [('Authorization', authz)])
    assert (resp.code, resp.comment) == (200, 'OK')
    assert resp.path('To-Path') == [c.uri]
    assert resp.path('From-Path') == [relay_uri]
    use_path = resp.path('Use-Path')
    assert len(use_path) == 1
    if secure:
        assert use_path[0].startswith('msrps://%s:%d/' % (relay.host, relay.tls_port))
    else:
        assert use_path[0].startswith('msrp://%s:%d/' % (relay.host, relay.port))
    assert use_path[0].endswith(';tcp')
    assert int(resp.header('Expires')) == relay.max_expires
    assert c.message_kinds == ['text', 'text']


def test_wrong_password_over_websocket_is_401(relay, clients):
    c = _ws_client(relay, clients, 'W')
    relay_uri = _ws_relay_uri(relay, False)
    _, resp = c.auth(relay_uri)
    challenge = digest.parse_challenge(resp.header('WWW-Authenticate'))
    authz = digest.make_authorization(challenge, relay.username, 'wrong', 'AUTH', relay_uri)
    _, resp = c.auth(relay_uri, [('Authorization', authz)])
    assert resp.code == 401
    assert resp.header('Use-Path') is None


def _exchange(a, b):
    """a SENDs to b and back; b REPORTs; check every path and what each side gets."""
    tid, mid = a.send_message(a.use_path + b.use_path + [b.uri], b'hello B')
    resp = a.recv_frame()
    assert (resp.tid, resp.code) == (tid, 200)
    assert resp.path('To-Path') == [a.uri]
    assert resp.header('Message-ID') == mid
    req = b.recv_frame()
    assert (req.method, req.tid, req.body) == ('SEND', tid, b'hello B')
    assert req.path('To-Path') == [b.uri]
    assert req.path('From-Path') == b.use_path + a.use_path + [a.uri]
    b.send(build_response(req, 200))
    b.send_report(req)
    report = a.recv_frame()
    assert (report.method, report.header('Message-ID')) == ('REPORT', mid)
    assert report.header('Status') == '000 200 OK'
    assert report.path('To-Path') == [a.uri]
    assert report.path('From-Path') == a.use_path + b.use_path + [b.uri]

    tid, mid = b.send_message(b.use_path + a.use_path + [a.uri], b'hello A')
    assert b.recv_frame().code == 200
    req = a.recv_frame()
    assert (req.method, req.tid, req.body) == ('SEND', tid, b'hello A')
    assert req.path('To-Path') == [a.uri]
    assert req.path('From-Path') == a.use_path + b.use_path + [b.uri]


@pytest.mark.parametrize('secure, tls', [(False, False), (True, True), (True, False)],
                         ids=['ws-tcp', 'wss-tls', 'wss-tcp'])
def test_send_from_websocket_to_tcp_client_and_back(relay, clients, secure, tls):
    a = _ws_login(relay, clients, 'A', secure)
    b = _tcp_login(relay, clients, 'B', tls)
    _exchange(a, b)
    # everything A got came in WebSocket text messages: 401, 200, 200, REPORT, SEND
    assert a.message_kinds == ['text'] * 5


@pytest.mark.parametrize('secure_a, secure_b', [(False, False), (True, False), (True, True)],
                         ids=['ws-ws', 'wss-ws', 'wss-wss'])
def test_send_between_two_websocket_clients(relay, clients, secure_a, secure_b):
    a = _ws_login(relay, clients, 'A', secure_a)
    b = _ws_login(relay, clients, 'B', secure_b)
    _exchange(a, b)


def test_tcp_client_reaches_websocket_client(relay, clients):
    """The TCP side starts: its SEND reaches the WebSocket client in one text message."""
    a = _ws_login(relay, clients, 'A')
    b = _tcp_login(relay, clients, 'B')
    _exchange(b, a)


def _send_raw(client, to_path, message_id, body, content_type='text/plain'):
    tid = new_id()
    frame = build_frame(tid, 'SEND', [('To-Path', ' '.join(to_path)), ('From-Path', client.uri),
                                      ('Message-ID', message_id),
                                      ('Byte-Range', '1-%d/%d' % (len(body), len(body)))],
                        body, content_type=content_type)
    return tid, frame


def test_binary_message_is_relayed_and_reaches_a_websocket_peer_as_binary(relay, clients):
    a = _ws_login(relay, clients, 'A')
    b = _ws_login(relay, clients, 'B')
    body = b'\xff\x00\x01\x02 not utf-8'
    tid, frame = _send_raw(a, a.use_path + b.use_path + [b.uri], 'bin1', body, 'application/octet-stream')
    a.send_binary(frame)
    assert a.recv_frame().code == 200
    req = b.recv_frame()
    assert (req.tid, req.body) == (tid, body)
    assert b.message_kinds[-1] == 'binary'


def test_largest_frame_kamailio_relays_and_the_next_size_up(relay, clients):
    """Over WebSocket the msrp module has the same frame limit as over TCP (NOTES.md: < 11239 bytes)."""
    a = _ws_login(relay, clients, 'A')
    b = _tcp_login(relay, clients, 'B')
    to_path = a.use_path + b.use_path + [b.uri]
    _, probe = _send_raw(a, to_path, 'size', b'x' * 10000)   # as many Byte-Range digits
    overhead = len(probe) - 10000
    tid, frame = _send_raw(a, to_path, 'size', b'x' * (11238 - overhead))
    assert len(frame) == 11238
    a.send(frame)
    assert a.recv_frame().code == 200
    req = b.recv_frame()
    assert (req.tid, len(req.body)) == (tid, 11238 - overhead)
    tid, frame = _send_raw(a, to_path, 'size', b'x' * (11239 - overhead))
    a.send(frame)
    resp = a.recv_frame()
    assert (resp.tid, resp.code) == (tid, 501)


def test_two_frames_in_one_message_close_the_websocket(relay, clients):
    """RFC 7977: one chunk per WebSocket message.  Kamailio cannot parse two and drops the connection."""
    a = _ws_login(relay, clients, 'A')
    b = _tcp_login(relay, clients, 'B')
    to_path = a.use_path + b.use_path + [b.uri]
    _, first = _send_raw(a, to_path, 'j1', b'AA')
    _, second = _send_raw(a, to_path, 'j2', b'BB')
    a.send(first + second)
    assert a.expect_closed(TIMEOUT)


def test_installer_and_install_command_cover_the_websocket_modules():
    """test/relay/install.sh (run by test/run.sh) installs and checks what KamailioRelay loads."""
    from msrplib.testing import kamailio as kamailio_module
    with open(os.path.join(HERE, 'relay', 'install.sh')) as f:
        script = dict(line.split('=', 1) for line in f.read().splitlines()
                      if line.startswith(('MODULES=', 'PACKAGES=')))
    modules = script['MODULES='[:-1]].strip('"').split()
    packages = script['PACKAGES='[:-1]].strip('"').split()
    assert {'websocket.so', 'xhttp.so', 'tm.so'} <= set(kamailio_module.REQUIRED_MODULES)
    assert sorted(modules) == sorted(kamailio_module.REQUIRED_MODULES)
    assert 'kamailio-websocket-modules' in packages
    assert kamailio_module.INSTALL_COMMAND.split()[-len(packages):] == packages
    with open(kamailio_module.TEMPLATE) as f:
        loaded = {line.split('"')[1] for line in f if line.startswith('loadmodule')}
    assert loaded <= set(kamailio_module.REQUIRED_MODULES)


def test_stock_cmap_gives_a_websocket_client_a_use_path_on_the_websocket_listener(clients):
    """The msrp module's own msrp_cmap_save() names the listener the AUTH came in on, ;tcp -- and Kamailio
    reads plain MSRP on that TCP listener too, so a peer without a relay reaches the WebSocket client there."""
    _require_kamailio()
    with KamailioRelay(routing='cmap') as stock:
        a = _ws_login(stock, clients, 'A')
        assert len(a.use_path) == 1
        assert a.use_path[0].startswith('msrp://%s:%d/msrp-' % (stock.host, stock.ws_port))
        assert a.use_path[0].endswith(';tcp')
        b = RawClient('B', stock.host, stock.ws_port, timeout=TIMEOUT, log=None)   # plain MSRP, no WebSocket
        clients.append(b)
        b.uri = 'msrp://127.0.0.1:%d/%s;tcp' % (b.local_port, new_id(10))
        tid, _ = b.send_message(a.use_path + [a.uri], b'plain MSRP to the ws port')
        assert b.recv_frame().code == 200
        req = a.recv_frame()
        assert (req.tid, req.body) == (tid, b'plain MSRP to the ws port')
        assert req.path('From-Path') == a.use_path + [b.uri]
