"""msrplib's relay support (RFC 4976) against a real Kamailio MSRP relay, plus unit tests without one.

The Kamailio tests start ``msrplib.testing``'s ``KamailioRelay``
on free loopback ports (see test/relay/NOTES.md for what Kamailio does on
the wire).  They are skipped when Kamailio is not installed
(``sh test/relay/install.sh``) -- except under ``CI=true``, where they fail.
Every blocking call runs under a ``gevent.Timeout``; waits of the connect
layer that a test provokes are shortened with monkeypatch.
"""

import hashlib
import os
import socket
import ssl
import time

import gevent
import gevent.server
import pytest
import trustme

HERE = os.path.dirname(os.path.abspath(__file__))

from msrplib.testing import KamailioRelay  # noqa: E402
from msrplib.testing.pytest_plugin import require_kamailio as _require_kamailio  # noqa: E402

import msrplib.connect  # noqa: E402
import msrplib.trafficlog  # noqa: E402
from msrplib import MSRPError  # noqa: E402
from msrplib import relay as relay_module  # noqa: E402
from msrplib.connect import (  # noqa: E402
    ConnectorDirect, AcceptorDirect, MSRPCertificateError, get_connector, get_acceptor)
from msrplib.protocol import (  # noqa: E402
    URI, ByteRange, ByteRangeHeader, ContentTypeHeader, FailureReportHeader, SuccessReportHeader)
from msrplib.relay import (  # noqa: E402
    MSRPRelaySettings, RelayConnection, ConnectorRelay, AcceptorRelay, resolve_relay,
    MSRPRelayAuthError, MSRPAuthTimeout, MSRPRelayConnectTimeout, MSRPRelayConnectError)
from msrplib.session import GreenMSRPSession, MSRPSessionError  # noqa: E402
from msrplib.transport import ConnectionClosed  # noqa: E402

#: Upper bound for any single step that talks to the relay.
STEP = 10

TRANSPORTS = [pytest.param(False, id='tcp'), pytest.param(True, id='tls')]


# ---------------------------------------------------------------------------
# Fixtures and helpers


def _start_relay(**kwargs):
    _require_kamailio()
    return KamailioRelay(**kwargs).__enter__()


@pytest.fixture
def relay(msrp_relay):
    """One relay shared by the tests that only make reservations and sessions (msrplib's pytest plugin)."""
    return msrp_relay


@pytest.fixture
def fresh_relay():
    """Start relays of one's own (``fresh_relay(min_expires=..., ...)``); each is closed afterwards."""
    started = []

    def start(**kwargs):
        r = _start_relay(**kwargs)
        started.append(r)
        return r
    yield start
    for r in started:
        r.close()


def settings(relay, tls, **kwargs):
    """MSRPRelaySettings for ``relay`` over TCP or TLS; the certificate is checked by the name relay.test."""
    return relay.settings(tls, **kwargs)


def connect(connector, acceptor, closing, connector_uri=None, acceptor_uri=None, assembler=None,
            return_paths=False):
    """Run prepare/complete on both sides (the SDP exchange in between) and return both sessions.

    ``assembler``: the accepting side's session reassembles messages with it.
    """
    closing.extend([connector, acceptor])
    with gevent.Timeout(STEP):
        acceptor_path = acceptor.prepare(acceptor_uri)
        connector_path = connector.prepare(connector_uri)
        job = gevent.spawn(acceptor.complete, connector_path)
        try:
            connector_transport = connector.complete(acceptor_path)
            acceptor_transport = job.get()
        finally:
            job.kill()
    closing.extend([connector_transport, acceptor_transport])
    sa, sb = GreenMSRPSession(connector_transport), GreenMSRPSession(acceptor_transport, assembler=assembler)
    closing.extend([sa, sb])
    if return_paths:
        return sa, sb, connector_path, acceptor_path
    return sa, sb


def chat_message(session, text, success_report=True):
    chunk = session.make_message(text, 'text/plain')
    if success_report:
        chunk.add_header(SuccessReportHeader('yes'))
    return chunk


def receive(session, method=None, timeout=STEP):
    """The next incoming chunk of ``session`` (of ``method`` when given)."""
    with gevent.Timeout(timeout):
        chunk = session.receive_chunk()
    if method is not None:
        assert chunk.method == method, chunk
    return chunk


def say(sender, receiver, text):
    """``sender`` delivers ``text`` with Success-Report; ``receiver`` gets it; ``sender`` gets the REPORT."""
    chunk = chat_message(sender, text)
    with gevent.Timeout(STEP):
        response = sender.deliver_chunk(chunk)
    assert response.code == 200
    received = receive(receiver, 'SEND')
    assert received.data == text.encode('utf-8')
    assert received.content_type == 'text/plain'
    assert received.message_id == chunk.message_id
    assert received.to_path == [receiver.msrp.local_uri]
    report = receive(sender, 'REPORT')
    assert report.message_id == chunk.message_id
    assert report.status.code == 200
    assert report.byte_range == ByteRange(1, len(received.data), len(received.data))
    return received


def chat(sa, sb):
    say(sa, sb, 'Hello B')
    say(sb, sa, 'Hello A, \u00e7a va?')
    say(sa, sb, 'Fine, thanks')


def assert_ended(session, timeout=5):
    """``session`` has ended: receive_chunk() raises a ConnectionClosed subclass, send_chunk MSRPSessionError."""
    with gevent.Timeout(timeout):
        while True:
            try:
                session.receive_chunk()  # skip what was queued before the end
            except ConnectionClosed:
                break
    with pytest.raises(ConnectionClosed):
        session.receive_chunk()
    with pytest.raises(MSRPSessionError):
        session.send_chunk(chat_message(session, 'too late'))


# ---------------------------------------------------------------------------
# Topologies


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_both_ends_through_the_relay(relay, closing, tls):
    connector, acceptor = ConnectorRelay(settings(relay, tls)), AcceptorRelay(settings(relay, tls))
    sa, sb = connect(connector, acceptor, closing)
    scheme = 'msrps' if tls else 'msrp'
    for end in (connector, acceptor):
        assert end.expires == relay.max_expires  # no Expires asked for: the relay's maximum
        assert len(end.use_path) == 1
        assert end.use_path[0].scheme == scheme and end.use_path[0].session_id
        assert end.use_path[0].port == (relay.tls_port if tls else relay.port)
    assert sa.msrp.full_local_path == connector.use_path + [sa.msrp.local_uri]
    assert sa.msrp.full_remote_path == acceptor.use_path + [sb.msrp.local_uri]
    chat(sa, sb)
    received = say(sa, sb, 'via both relay sessions')
    # each relay hop moved its URI from the To-Path to the From-Path
    assert received.from_path == acceptor.use_path + connector.use_path + [sa.msrp.local_uri]


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_relay_for_the_acceptor_only(relay, closing, tls):
    """The calling side connects directly to the answering side's relay session."""
    connector = ConnectorDirect()
    uri = URI(host=relay.host, use_tls=tls, credentials=relay.client_ssl_context() if tls else None)
    sa, sb = connect(connector, AcceptorRelay(settings(relay, tls)), closing, connector_uri=uri)
    assert sa.msrp.getPeer().port == (relay.tls_port if tls else relay.port)
    chat(sa, sb)


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_relay_for_the_connector_only(relay, closing, tls):
    """The relay opens the connection to the answering side's advertised URI."""
    acceptor = AcceptorDirect()
    sa, sb = connect(ConnectorRelay(settings(relay, tls)), acceptor, closing,
                     acceptor_uri=URI(host=relay.host, port=0, use_tls=tls))
    assert sb.msrp.getPeer().host == relay.host
    chat(sa, sb)


def test_get_connector_and_acceptor_through_the_relay(relay, closing):
    sa, sb = connect(get_connector(settings(relay, True)), get_acceptor(settings(relay, True)), closing)
    chat(sa, sb)


# ---------------------------------------------------------------------------
# A multi-megabyte message in chunks small enough for Kamailio


MESSAGE_SIZE = 3 * 1024 * 1024
CHUNK_SIZE = 8 * 1024  # Kamailio drops frames of 11239 bytes or more (NOTES.md)


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_multi_megabyte_message_with_success_reports(relay, closing, tls):
    sa, sb = connect(ConnectorRelay(settings(relay, tls)), AcceptorRelay(settings(relay, tls)), closing)
    message = os.urandom(MESSAGE_SIZE)
    message_id = 'big-%s' % os.urandom(6).hex()
    pieces = range(0, MESSAGE_SIZE, CHUNK_SIZE)
    responses = []

    def send_all():
        for offset in pieces:
            piece = message[offset:offset + CHUNK_SIZE]
            start, end = offset + 1, offset + len(piece)
            chunk = sa.msrp.make_send_request(message_id=message_id, data=piece, start=start, end=end,
                                              length=MESSAGE_SIZE)
            chunk.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(start, end, MESSAGE_SIZE))
            chunk.add_header(ContentTypeHeader('application/octet-stream'))
            chunk.add_header(SuccessReportHeader('yes'))
            chunk.add_header(FailureReportHeader('yes'))
            assert len(chunk.encode()) < 11239
            sa.send_chunk(chunk, responses.append)

    def receive_all():
        buffer = bytearray(MESSAGE_SIZE)
        seen = 0
        while True:
            chunk = sb.receive_chunk()
            assert chunk.method == 'SEND' and chunk.message_id == message_id
            byte_range = chunk.byte_range
            assert byte_range.total == MESSAGE_SIZE
            assert byte_range.end == byte_range.start + len(chunk.data) - 1
            buffer[byte_range.start - 1:byte_range.end] = chunk.data
            seen += len(chunk.data)
            if chunk.contflag == '$':
                return bytes(buffer), seen

    def collect_reports():
        reports = []
        while len(reports) < len(pieces):
            chunk = sa.receive_chunk()
            assert chunk.method == 'REPORT'
            reports.append(chunk)
        return reports

    with gevent.Timeout(60):
        receiver = gevent.spawn(receive_all)
        reporter = gevent.spawn(collect_reports)
        send_all()
        data, seen = receiver.get()
        reports = reporter.get()
    assert seen == MESSAGE_SIZE
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(message).hexdigest()
    assert len(reports) == len(pieces)
    assert {r.message_id for r in reports} == {message_id}
    assert all(r.status.code == 200 for r in reports)
    assert sorted(r.byte_range.start for r in reports) == [offset + 1 for offset in pieces]
    assert sum(r.byte_range.end - r.byte_range.start + 1 for r in reports) == MESSAGE_SIZE
    with gevent.Timeout(STEP):
        while len(responses) < len(pieces):
            gevent.sleep(0.01)
    assert {r.code for r in responses} == {200}  # the relay's hop-by-hop answers
    # the session still works afterwards
    chat(sa, sb)


# ---------------------------------------------------------------------------
# Authentication failures


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_wrong_password_is_an_auth_error_with_the_relays_answer(relay, closing, tls):
    connector = ConnectorRelay(settings(relay, tls, password='not-the-password'))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayAuthError) as info:
        connector.prepare()
    assert info.value.code == 401
    assert info.value.comment == 'Unauthorized'
    assert isinstance(info.value, MSRPError)
    assert relay.domain in str(info.value)
    assert connector.transport is None  # the relay connection is closed


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_unknown_user_is_an_auth_error(relay, closing, tls):
    # right password, wrong user: the test config answers 403 (NOTES.md); wrong password too: 401
    connector = ConnectorRelay(settings(relay, tls, username='mallory'))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayAuthError) as info:
        connector.prepare()
    assert info.value.code == 403
    assert info.value.comment == 'Forbidden'
    connector = ConnectorRelay(settings(relay, tls, username='mallory', password='guess'))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayAuthError) as info:
        connector.prepare()
    assert info.value.code == 401


# ---------------------------------------------------------------------------
# TLS: the relay's certificate is checked by name


@pytest.mark.parametrize('trust', ['another-ca', 'system-cas'])
def test_relay_certificate_from_an_untrusted_ca_is_refused(relay, closing, trust):
    if trust == 'another-ca':
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        trustme.CA().configure_trust(context)
    else:
        context = None  # the system's CAs, which do not know the test CA
    connector = ConnectorRelay(settings(relay, True, credentials=context))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPCertificateError):
        connector.prepare()
    assert connector.transport is None


def test_relay_certificate_for_another_name_is_refused(relay, closing):
    # the relay's certificate names 127.0.0.1, localhost and relay.test: not relay.example
    connector = ConnectorRelay(settings(relay, True, domain='relay.example'))
    closing.append(connector)
    with gevent.Timeout(STEP), pytest.raises(MSRPCertificateError):
        connector.prepare()


def test_relay_certificate_checked_against_the_domain_not_the_host(relay, closing):
    # host is an address; the name checked is the domain (the certificate has relay.test)
    connector = ConnectorRelay(settings(relay, True))
    closing.append(connector)
    with gevent.Timeout(STEP):
        path = connector.prepare()
    cert = connector.transport._sock.getpeercert()
    names = [value for kind, value in cert['subjectAltName'] if kind == 'DNS']
    assert 'relay.test' in names
    assert path[0].scheme == 'msrps'


# ---------------------------------------------------------------------------
# The relay is not there, or goes away


def _closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_relay_down_is_a_connect_error_naming_the_relay(tls):
    port = _closed_port()
    relay = MSRPRelaySettings('relay.test', 'alice', 'secret', host='127.0.0.1', port=port, use_tls=tls)
    connector = ConnectorRelay(relay)
    with gevent.Timeout(STEP), pytest.raises(MSRPRelayConnectError) as info:
        connector.prepare()
    error = info.value
    assert isinstance(error, MSRPError)
    assert 'relay.test' in str(error)
    assert error.relay == 'relay.test'
    assert (error.host, error.port) == ('127.0.0.1', port)
    assert len(error.errors) == 1
    assert connector.transport is None


def test_relay_that_never_finishes_the_tls_handshake_is_a_connect_timeout(monkeypatch):
    server = gevent.server.StreamServer(('127.0.0.1', 0), lambda sock, address: gevent.sleep(STEP))
    server.start()
    try:
        monkeypatch.setattr(MSRPRelayConnectTimeout, 'seconds', 0.3)
        relay = MSRPRelaySettings('relay.test', 'alice', 'secret', host='127.0.0.1', port=server.server_port)
        started = time.monotonic()
        with gevent.Timeout(STEP), pytest.raises(MSRPRelayConnectTimeout):
            ConnectorRelay(relay).prepare()
        assert time.monotonic() - started < 2
    finally:
        server.stop(timeout=0)


def test_relay_that_never_answers_auth_is_an_auth_timeout(monkeypatch):
    server = gevent.server.StreamServer(('127.0.0.1', 0), lambda sock, address: gevent.sleep(STEP))
    server.start()
    try:
        monkeypatch.setattr(MSRPAuthTimeout, 'seconds', 0.3)
        relay = MSRPRelaySettings('relay.test', 'alice', 'secret', host='127.0.0.1', port=server.server_port,
                                  use_tls=False)
        connector = ConnectorRelay(relay)
        with gevent.Timeout(STEP), pytest.raises(MSRPAuthTimeout) as info:
            connector.prepare()
        assert info.value.code == 408
        assert connector.transport is None
    finally:
        server.stop(timeout=0)


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_relay_killed_mid_session_ends_both_sessions(fresh_relay, closing, tls):
    relay = fresh_relay()
    sa, sb = connect(ConnectorRelay(settings(relay, tls)), AcceptorRelay(settings(relay, tls)), closing)
    say(sa, sb, 'before the crash')
    started = time.monotonic()
    relay.kill()
    assert_ended(sa)
    assert_ended(sb)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------
# Expires: 423 and refresh


@pytest.fixture(scope='module')
def short_relay():
    """A relay granting reservations of 2 to 6 seconds."""
    r = _start_relay(min_expires=2, max_expires=6)
    yield r
    r.close()


@pytest.mark.parametrize('asked, granted', [(1, 2), (100, 6), (4, 4)])
def test_423_retries_within_the_relays_bounds(short_relay, closing, asked, granted):
    connector = ConnectorRelay(settings(short_relay, False, expires=asked))
    closing.append(connector)
    with gevent.Timeout(STEP):
        path = connector.prepare()
    assert connector.expires == granted
    assert len(path) == 2 and path[0].session_id


def test_423_retry_over_tls(short_relay, closing):
    connector = AcceptorRelay(settings(short_relay, True, expires=1))
    closing.append(connector)
    with gevent.Timeout(STEP):
        connector.prepare()
    assert connector.expires == 2


class RecordingLogger(msrplib.trafficlog.Logger):
    """A Logger that also keeps its info and warning lines."""

    def __init__(self, *args, **kwargs):
        msrplib.trafficlog.Logger.__init__(self, *args, **kwargs)
        self.lines = []

    def info(self, message, *args, **kwargs):
        self.lines.append(('info', message))
        msrplib.trafficlog.Logger.info(self, message, *args, **kwargs)

    def warning(self, message, *args, **kwargs):
        self.lines.append(('warning', message))
        msrplib.trafficlog.Logger.warning(self, message, *args, **kwargs)


def wait_for_refreshes(connector, count):
    with gevent.Timeout(STEP):
        while connector.refreshes < count:
            gevent.sleep(0.02)


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_refresh_with_short_lifetimes_while_the_session_works(short_relay, closing, tls):
    logger = RecordingLogger()
    connector = ConnectorRelay(settings(short_relay, tls, expires=2), logger=logger)
    acceptor = AcceptorRelay(settings(short_relay, tls, expires=6))
    sa, sb = connect(connector, acceptor, closing)
    started = time.monotonic()
    assert connector.expires == 2 and acceptor.expires == 6
    advertised = list(connector.use_path)
    # the first refresh is due at 2/3 of the 2 s lifetime: the session works before and after it,
    # while the reservation advertised in the (simulated) SDP is still alive
    say(sa, sb, 'before the refresh')
    say(sb, sa, 'answer before the refresh')
    wait_for_refreshes(connector, 1)
    say(sa, sb, 'after the refresh')
    say(sb, sa, 'answer after the refresh')
    assert time.monotonic() - started < 2, 'too slow: the first reservation expired meanwhile'
    gevent.sleep(max(0, started + 3.5 - time.monotonic()))
    # each counted refresh is a refresh AUTH the relay answered 200 (picked up by the session's reader)
    assert connector.refreshes >= 2
    assert connector.expires == 2
    assert acceptor.refreshes == 0  # its first refresh is due at 4 s
    assert not [line for level, line in logger.lines if level == 'warning']
    assert short_relay.log_text().count('MSRP AUTH ok') >= 2 + connector.refreshes
    # Kamailio makes a new reservation for every AUTH; the advertised one stays in use
    assert connector.use_path == advertised
    assert sa.msrp.full_local_path == advertised + [sa.msrp.local_uri]
    assert any('new Use-Path' in line for level, line in logger.lines)
    assert sa.connected and sb.connected


def test_kamailio_refresh_does_not_extend_the_advertised_reservation(short_relay, closing):
    """Documents the limitation in doc/relay.md: once the reservation advertised in SDP expires,
    chunks to that side are lost although its refreshes succeeded (Kamailio gives each AUTH a
    new session id and lets the old one expire).  If this starts failing, update doc/relay.md."""
    connector = ConnectorRelay(settings(short_relay, False, expires=2))
    acceptor = AcceptorRelay(settings(short_relay, False, expires=6))
    sa, sb = connect(connector, acceptor, closing)
    started = time.monotonic()
    wait_for_refreshes(connector, 2)
    gevent.sleep(max(0, started + 3.5 - time.monotonic()))  # the first reservation is gone by now
    chunk = chat_message(sa, 'to the acceptor, whose reservation is alive')
    with gevent.Timeout(STEP):
        assert sa.deliver_chunk(chunk).code == 200
    assert receive(sb, 'SEND').message_id == chunk.message_id
    # its REPORT goes back through the connector's expired reservation: the relay drops it
    with pytest.raises(gevent.Timeout):
        receive(sa, timeout=1)
    # and so is a SEND to the connector -- yet the relay's hop-by-hop 200 says all is well
    chunk = chat_message(sb, 'to the connector')
    with gevent.Timeout(STEP):
        assert sb.deliver_chunk(chunk).code == 200
    with pytest.raises(gevent.Timeout):
        receive(sa, timeout=1)
    assert sa.connected and sb.connected


# ---------------------------------------------------------------------------
# Without Kamailio: settings, SRV, classes


def test_relay_settings_defaults():
    relay = MSRPRelaySettings('example.com', 'alice', 'secret')
    assert relay.use_tls is True
    assert relay.host is None and relay.port is None and relay.credentials is None and relay.expires is None
    assert relay.scheme == 'msrps'
    assert str(relay.uri_domain) == 'msrps://example.com;tcp'
    assert MSRPRelaySettings('example.com', 'a', 'b', use_tls=False).scheme == 'msrp'
    plain = MSRPRelaySettings('example.com', 'a', 'b', port=2856, use_tls=False)
    assert str(plain.uri_domain) == 'msrp://example.com:2856;tcp'
    assert MSRPRelaySettings('example.com', 'a', 'b', expires=120).expires == 120


def test_relay_connection_mode_is_checked():
    relay = MSRPRelaySettings('example.com', 'alice', 'secret')
    with pytest.raises(ValueError):
        RelayConnection(relay, 'sideways')
    assert RelayConnection(relay, 'active').mode == 'active'
    assert RelayConnection(relay, 'passive').mode == 'passive'
    assert ConnectorRelay(relay).mode == 'active'
    assert AcceptorRelay(relay).mode == 'passive'


def test_get_connector_and_get_acceptor_choose_the_relay_classes():
    relay = MSRPRelaySettings('example.com', 'alice', 'secret')
    assert type(get_connector(relay)) is ConnectorRelay
    assert type(get_acceptor(relay)) is AcceptorRelay
    assert type(get_connector()) is ConnectorDirect
    assert type(get_acceptor(None)) is AcceptorDirect
    assert get_connector(relay, use_sessmatch=True).use_sessmatch is True


def test_relay_names_importable_from_msrplib_connect():
    for name in ('MSRPRelaySettings', 'RelayConnection', 'ConnectorRelay', 'AcceptorRelay',
                 'MSRPRelayAuthError', 'MSRPAuthTimeout', 'MSRPRelayConnectTimeout', 'MSRPRelayConnectError'):
        assert getattr(msrplib.connect, name) is getattr(relay_module, name)
    from msrplib.connect import MSRPRelaySettings as imported  # noqa: F401
    assert imported is MSRPRelaySettings
    with pytest.raises(AttributeError):
        msrplib.connect.NoSuchRelayThing


def test_relay_errors_belong_to_the_msrp_error_tree():
    assert issubclass(MSRPRelayAuthError, MSRPError)
    assert issubclass(MSRPAuthTimeout, msrplib.connect.MSRPTimeout)
    assert MSRPAuthTimeout.code == 408
    assert issubclass(MSRPRelayConnectTimeout, msrplib.connect.MSRPConnectTimeout)
    assert issubclass(MSRPRelayConnectError, msrplib.connect.MSRPConnectError)


class _SRV:
    def __init__(self, priority, weight, port, target):
        self.priority, self.weight, self.port, self.target = priority, weight, port, target


def _fake_resolve(monkeypatch, answers=None, error=None):
    import dns.resolver
    asked = []

    def resolve(name, rdtype, *args, **kwargs):
        asked.append((name, rdtype))
        if error is not None:
            raise error
        return answers
    monkeypatch.setattr(dns.resolver, 'resolve', resolve)
    return asked


def test_resolve_relay_orders_srv_records_by_priority_then_weight(monkeypatch):
    asked = _fake_resolve(monkeypatch, [
        _SRV(20, 100, 2855, 'backup.example.com.'),
        _SRV(10, 10, 2856, 'light.example.com.'),
        _SRV(10, 90, 2857, 'heavy.example.com.'),
    ])
    relay = MSRPRelaySettings('example.com', 'alice', 'secret')
    assert resolve_relay(relay) == [('heavy.example.com', 2857), ('light.example.com', 2856),
                                    ('backup.example.com', 2855)]
    assert asked == [('_msrps._tcp.example.com', 'SRV')]


def test_resolve_relay_asks_for_msrp_srv_without_tls(monkeypatch):
    asked = _fake_resolve(monkeypatch, [_SRV(0, 0, 2855, 'relay.example.com.')])
    relay = MSRPRelaySettings('example.com', 'alice', 'secret', use_tls=False)
    assert resolve_relay(relay) == [('relay.example.com', 2855)]
    assert asked == [('_msrp._tcp.example.com', 'SRV')]


def test_resolve_relay_falls_back_to_the_domain_on_nxdomain(monkeypatch):
    import dns.resolver
    _fake_resolve(monkeypatch, error=dns.resolver.NXDOMAIN())
    relay = MSRPRelaySettings('example.com', 'alice', 'secret')
    assert resolve_relay(relay) == [('example.com', 2855)]


def test_resolve_relay_falls_back_when_the_srv_record_says_no_service(monkeypatch):
    _fake_resolve(monkeypatch, [_SRV(0, 0, 0, '.')])
    relay = MSRPRelaySettings('example.com', 'alice', 'secret')
    assert resolve_relay(relay) == [('example.com', 2855)]


def test_resolve_relay_uses_host_and_port_without_dns(monkeypatch):
    asked = _fake_resolve(monkeypatch, error=AssertionError('no DNS expected'))
    assert resolve_relay(MSRPRelaySettings('example.com', 'a', 'b', host='10.0.0.1')) == [('10.0.0.1', 2855)]
    assert resolve_relay(MSRPRelaySettings('example.com', 'a', 'b', host='10.0.0.1', port=9)) == [('10.0.0.1', 9)]
    assert resolve_relay(MSRPRelaySettings('example.com', 'a', 'b', port=9)) == [('example.com', 9)]
    assert asked == []


# ---------------------------------------------------------------------------
# Regression tests for bugs fixed in msrplib/relay.py


def test_srv_lookup_does_not_block_other_greenlets(monkeypatch):
    """dnspython's resolver blocks the thread: the SRV look-up must not stop every other greenlet."""
    import dns.resolver

    def slow_resolve(name, rdtype, *args, **kwargs):
        time.sleep(0.3)  # a real blocking wait, like a slow DNS server
        return [_SRV(0, 0, 2855, 'relay.example.com.')]
    monkeypatch.setattr(dns.resolver, 'resolve', slow_resolve)
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.02)
    ticker = gevent.spawn(tick)
    gevent.sleep(0)
    try:
        with gevent.Timeout(STEP):
            found = resolve_relay(MSRPRelaySettings('example.com', 'alice', 'secret'))
    finally:
        ticker.kill()
    assert found == [('relay.example.com', 2855)]
    assert len(ticks) >= 5


def test_refresher_ends_when_the_connection_closes(relay, closing):
    """The refresh greenlet must not outlive the session by most of the reservation's lifetime."""
    connector = ConnectorRelay(settings(relay, False))
    sa, sb = connect(connector, AcceptorRelay(settings(relay, False)), closing)
    assert connector.expires == relay.max_expires  # first refresh due in 40 minutes
    refresher = connector._refresher
    assert refresher is not None and not refresher.dead
    with gevent.Timeout(STEP):
        sa.shutdown()
    with gevent.Timeout(3):
        refresher.join()
    assert refresher.dead
