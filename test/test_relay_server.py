"""The Kamailio test relay itself works (raw sockets, no msrplib transport).

These tests exercise msrplib/testing/kamailio.py with hand-written MSRP
(test/relay/rawmsrp.py) and msrplib.digest only, so a failure here means
the relay setup is broken, not msrplib.  They are skipped when kamailio is
not installed (see test/relay/install.sh) unless CI=true, in which case
they fail.  Every socket has a timeout.
"""

import os
import socket
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'relay'))

from msrplib.testing import KamailioRelay  # noqa: E402
from msrplib.testing.pytest_plugin import require_kamailio as _require_kamailio  # noqa: E402
from rawmsrp import RawClient, build_response  # noqa: E402

from msrplib import digest  # noqa: E402

TIMEOUT = 5.0


@pytest.fixture(scope='module')
def relay():
    _require_kamailio()
    with KamailioRelay(min_expires=30, max_expires=600) as r:
        yield r


def _client(relay, name, tls=False):
    if tls:
        return RawClient(name, relay.host, relay.tls_port, use_tls=True,
                         ssl_context=relay.client_ssl_context(),
                         timeout=TIMEOUT, log=None)
    return RawClient(name, relay.host, relay.port, timeout=TIMEOUT, log=None)


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.close()


def _login(relay, clients, name, tls=False, expires=None):
    c = _client(relay, name, tls)
    clients.append(c)
    first, second = c.authenticate(relay.tls_uri if tls else relay.uri,
                                   relay.username, relay.password,
                                   expires=expires, digest=digest)
    assert first.code == 401
    assert second is not None and second.code == 200, second
    return c


def test_relay_starts_and_stops():
    _require_kamailio()
    r = KamailioRelay()
    try:
        r.start()
        assert r.running
        for port in (r.port, r.tls_port):
            with socket.create_connection((r.host, port), timeout=TIMEOUT):
                pass
        r.stop()
        assert not r.running
        # Nothing accepts on the port any more.  (A connection that succeeds anyway must be
        # another process that took the freed port, or TCP's self-connect: neither is Kamailio.)
        try:
            probe = socket.create_connection((r.host, r.port), timeout=TIMEOUT)
        except OSError:
            pass
        else:
            with probe:
                assert probe.getsockname() == probe.getpeername() or not r.running
    finally:
        r.close()
    assert not os.path.exists(r.workdir) or os.environ.get('KEEP_RELAY_DIR')


def test_auth_challenge_then_200_with_use_path(relay, clients):
    c = _client(relay, 'A')
    clients.append(c)
    _, resp = c.auth(relay.uri)
    assert resp.code == 401
    assert resp.path('To-Path') == [c.uri]
    assert resp.path('From-Path') == [relay.uri]
    challenge = digest.parse_challenge(resp.header('WWW-Authenticate'))
    assert challenge['realm'] == relay.realm
    assert 'auth' in challenge['qop'].split(',')
    authz = digest.make_authorization(challenge, relay.username,
                                      relay.password, 'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    assert (resp.code, resp.comment) == (200, 'OK')
    use_path = resp.path('Use-Path')
    assert len(use_path) == 1
    assert use_path[0].startswith('msrp://%s:%d/' % (relay.host, relay.port))
    assert use_path[0].endswith(';tcp')
    assert int(resp.header('Expires')) == relay.max_expires


def test_auth_over_tls(relay, clients):
    c = _login(relay, clients, 'T', tls=True)
    assert c.use_path[0].startswith('msrps://%s:%d/' % (relay.host,
                                                        relay.tls_port))


def test_wrong_password_rejected(relay, clients):
    c = _client(relay, 'W')
    clients.append(c)
    _, resp = c.auth(relay.uri)
    challenge = digest.parse_challenge(resp.header('WWW-Authenticate'))
    authz = digest.make_authorization(challenge, relay.username, 'wrong',
                                      'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    assert resp.code == 401
    assert resp.header('Use-Path') is None
    digest.parse_challenge(resp.header('WWW-Authenticate'))


def test_unknown_user_forbidden(relay, clients):
    c = _client(relay, 'U')
    clients.append(c)
    _, resp = c.auth(relay.uri)
    challenge = digest.parse_challenge(resp.header('WWW-Authenticate'))
    authz = digest.make_authorization(challenge, 'mallory', relay.password,
                                      'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    assert resp.code == 403


@pytest.mark.parametrize('expires, code, header', [
    (29, 423, 'Min-Expires'), (601, 423, 'Max-Expires'), (30, 200, 'Expires'),
    (600, 200, 'Expires'), (120, 200, 'Expires')])
def test_expires_range(relay, clients, expires, code, header):
    c = _client(relay, 'E')
    clients.append(c)
    first, resp = c.authenticate(relay.uri, relay.username, relay.password,
                                 expires=expires, digest=digest)
    assert resp.code == code
    expected = {'Min-Expires': relay.min_expires,
                'Max-Expires': relay.max_expires,
                'Expires': expires}[header]
    assert int(resp.header(header)) == expected


def test_send_and_report_between_two_clients(relay, clients):
    a = _login(relay, clients, 'A')
    b = _login(relay, clients, 'B', tls=True)
    tid, mid = a.send_message(a.use_path + b.use_path + [b.uri], b'hi B')
    resp = a.recv_frame()
    assert (resp.tid, resp.code) == (tid, 200)
    req = b.recv_frame()
    assert (req.method, req.tid, req.body) == ('SEND', tid, b'hi B')
    assert req.path('To-Path') == [b.uri]
    assert req.path('From-Path') == b.use_path + a.use_path + [a.uri]
    b.send(build_response(req, 200))
    b.send_report(req)
    report = a.recv_frame()
    assert report.method == 'REPORT'
    assert report.header('Message-ID') == mid
    assert report.header('Status') == '000 200 OK'
    assert report.path('From-Path') == a.use_path + b.use_path + [b.uri]


def test_unknown_session_481(relay, clients):
    a = _login(relay, clients, 'A')
    a.send_message(['msrp://%s:%d/nosuchsession;tcp' % (relay.host,
                                                         relay.port),
                    'msrp://127.0.0.1:9/x;tcp'], b'x')
    assert a.recv_frame().code == 481


def test_peer_without_relay(relay, clients):
    """A behind the relay, B listening on its own URI: the relay connects to
    B, and B's REPORT/SEND on that connection reach A."""
    a = _login(relay, clients, 'A')
    listener = socket.socket()
    listener.settimeout(TIMEOUT)
    try:
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        b_uri = 'msrp://127.0.0.1:%d/bsession;tcp' % listener.getsockname()[1]
        tid, mid = a.send_message(a.use_path + [b_uri], b'direct')
        assert a.recv_frame().code == 200
        conn, _ = listener.accept()
    finally:
        listener.close()
    conn.settimeout(TIMEOUT)
    b = RawClient.__new__(RawClient)
    b.name, b.timeout, b.log, b.sock, b.buf = 'B', TIMEOUT, None, conn, b''
    b.uri = b_uri
    clients.append(b)
    req = b.recv_frame()
    assert (req.method, req.body) == ('SEND', b'direct')
    assert req.path('To-Path') == [b_uri]
    assert req.path('From-Path') == a.use_path + [a.uri]
    b.send(build_response(req, 200))
    b.send_report(req)
    report = a.recv_frame()
    assert (report.method, report.header('Message-ID')) == ('REPORT', mid)


def test_kill_closes_client_connections(clients):
    _require_kamailio()
    r = KamailioRelay()
    try:
        r.start()
        a = _login(r, clients, 'A')
        r.kill()
        assert not r.running
        assert a.expect_closed(TIMEOUT)
    finally:
        r.close()
