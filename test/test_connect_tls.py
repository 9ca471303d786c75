"""msrps connections: ephemeral certificates with SDP fingerprints, CA-verified contexts (trustme), IPv6."""

import ssl

import gevent
import gevent.ssl
import pytest
import trustme

from msrplib import MSRPError
from msrplib.connect import (
    ConnectorDirect, AcceptorDirect, MSRPServer, MSRPCertificateError, MSRPConnectError)
from msrplib.protocol import URI
from msrplib.tls import TLSCredentials
from msrplib.transport import ConnectionClosed

T = 5
HOSTS = ['127.0.0.1', '::1']


pytestmark = pytest.mark.usefixtures('short_connect_timeouts')


@pytest.fixture(scope='module')
def ca():
    return trustme.CA()


def server_context(cert):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    return context


def client_context(ca):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def secure(host='127.0.0.1', port=0, credentials=None):
    return URI(host=host, port=port, use_tls=True, credentials=credentials)


def run(acceptor, connector, acceptor_uri, connector_uri):
    """prepare -> complete on both sides; returns (connector result, acceptor greenlet)."""
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(acceptor_uri)
        connector_path = connector.prepare(connector_uri)
        passive = gevent.spawn(acceptor.complete, connector_path)
        try:
            return connector.complete(acceptor_path), passive
        except BaseException:
            passive.join()
            raise
        finally:
            connector.cleanup()


def exchange(ta, tb):
    with gevent.Timeout(T):
        ta.write_chunk(ta.make_send_request(data=b'secret ping'))
        assert tb.read_chunk().data == b'secret ping'
        tb.write_chunk(tb.make_send_request(data=b'secret pong'))
        assert ta.read_chunk().data == b'secret pong'


def close(*transports):
    for transport in transports:
        transport.loseConnection()


@pytest.mark.parametrize('host', HOSTS)
def test_ephemeral_certificate_and_expected_fingerprint(host):
    acceptor = AcceptorDirect()
    connector = ConnectorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure(host))
        # the fingerprint exists once prepare() has run: it goes into the SDP with the path
        assert acceptor.fingerprint.startswith('sha-256 ') and acceptor_path[0].scheme == 'msrps'
        connector.expected_fingerprint = acceptor.fingerprint
        connector_path = connector.prepare(secure(host, port=None))
        passive = gevent.spawn(acceptor.complete, connector_path)
        ta = connector.complete(acceptor_path)
        tb = passive.get()
    assert isinstance(ta._sock, gevent.ssl.SSLSocket) and isinstance(tb._sock, gevent.ssl.SSLSocket)
    assert str(acceptor_path[0]).startswith('msrps://')
    assert ta.getPeer().host == host
    exchange(ta, tb)
    close(ta, tb)


def test_wrong_fingerprint_fails_complete_with_certificate_error():
    other = TLSCredentials.ephemeral().fingerprint
    acceptor, connector = AcceptorDirect(), ConnectorDirect(expected_fingerprint=other)
    with pytest.raises(MSRPCertificateError) as info:
        run(acceptor, connector, secure(), secure(port=None))
    assert isinstance(info.value, MSRPError)
    assert info.value.expected == other and info.value.actual == acceptor.fingerprint


def test_wrong_fingerprint_acceptor_side_ends():
    acceptor, connector = AcceptorDirect(), ConnectorDirect(
        expected_fingerprint=TLSCredentials.ephemeral().fingerprint)
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure())
        passive = gevent.spawn(acceptor.complete, connector.prepare(secure(port=None)))
        with pytest.raises(MSRPCertificateError):
            connector.complete(acceptor_path)
        passive.join()
    assert isinstance(passive.exception, (ConnectionClosed, MSRPError))


def test_several_expected_fingerprints_any_may_match():
    acceptor = AcceptorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure())
        connector = ConnectorDirect(expected_fingerprint=[TLSCredentials.ephemeral().fingerprint,
                                                          acceptor.fingerprint])
        passive = gevent.spawn(acceptor.complete, connector.prepare(secure(port=None)))
        ta = connector.complete(acceptor_path)
        tb = passive.get()
    exchange(ta, tb)
    close(ta, tb)


def test_malformed_expected_fingerprint_is_an_msrp_error():
    acceptor, connector = AcceptorDirect(), ConnectorDirect(expected_fingerprint='sha-256 nonsense')
    with pytest.raises(MSRPError):
        run(acceptor, connector, secure(), secure(port=None))
    acceptor.cleanup()


def test_acceptor_with_given_credentials_advertises_their_fingerprint(ca):
    cert = ca.issue_cert('127.0.0.1')
    credentials = TLSCredentials(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes())
    acceptor = AcceptorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure(credentials=credentials))
        assert acceptor.fingerprint == credentials.fingerprint
        connector = ConnectorDirect(expected_fingerprint=credentials.fingerprint)
        passive = gevent.spawn(acceptor.complete, connector.prepare(secure(port=None)))
        ta = connector.complete(acceptor_path)
        tb = passive.get()
    exchange(ta, tb)
    close(ta, tb)


@pytest.mark.parametrize('host', ['127.0.0.1', '::1', 'localhost'])
def test_ca_verified_context_checks_the_name(ca, host):
    cert = ca.issue_cert('localhost', '127.0.0.1', '::1')
    acceptor_uri = secure('::1' if host == '::1' else '127.0.0.1', credentials=server_context(cert))
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(acceptor_uri)
        assert acceptor.fingerprint is None  # an SSLContext's certificate is the user's business
        connector_path = connector.prepare(secure(port=None, credentials=client_context(ca)))
        passive = gevent.spawn(acceptor.complete, connector_path)
        # the name the connector checks is the host of the URI it connects to
        target = URI(host=host, port=acceptor_path[0].port, use_tls=True,
                     session_id=acceptor_path[0].session_id)
        if host == 'localhost':
            acceptor_uri.host = 'localhost'  # what the connector will send in To-Path
        ta = connector.complete([target])
        tb = passive.get()
    assert ta._sock.getpeercert()['subjectAltName']
    exchange(ta, tb)
    close(ta, tb)


def test_ca_verified_context_rejects_a_wrong_name(ca):
    cert = ca.issue_cert('other.example')
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    with pytest.raises(MSRPCertificateError) as info:
        run(acceptor, connector, secure(credentials=server_context(cert)),
            secure(port=None, credentials=client_context(ca)))
    assert '127.0.0.1' in str(info.value)


def test_ca_verified_context_rejects_an_unknown_issuer(ca):
    acceptor, connector = AcceptorDirect(), ConnectorDirect()  # the acceptor's certificate is self-signed
    with pytest.raises(MSRPCertificateError):
        run(acceptor, connector, secure(), secure(port=None, credentials=client_context(ca)))


def test_tls_connector_against_a_plain_acceptor_fails_cleanly():
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        passive = gevent.spawn(acceptor.complete, connector.prepare(secure(port=None)))
        tls_target = secure(port=acceptor_path[0].port)
        tls_target.session_id = acceptor_path[0].session_id
        with pytest.raises(MSRPConnectError):
            connector.complete([tls_target])
        passive.join()
    assert isinstance(passive.exception, ConnectionClosed)  # the ClientHello is not MSRP


def test_plain_connector_against_a_tls_acceptor_fails_cleanly():
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure())
        passive = gevent.spawn(acceptor.complete, connector.prepare(URI(host='127.0.0.1', use_tls=False)))
        plain_target = URI(host='127.0.0.1', port=acceptor_path[0].port, use_tls=False,
                           session_id=acceptor_path[0].session_id)
        with pytest.raises((ConnectionClosed, MSRPError)):
            connector.complete([plain_target])
        passive.join()
    assert isinstance(passive.exception, MSRPConnectError)


@pytest.mark.parametrize('host', HOSTS)
def test_server_tls_sessions(host):
    server = MSRPServer()
    try:
        first = secure(host)
        server.prepare(first)
        uris = [first] + [secure(host, port=first.port) for _ in range(9)]
        for uri in uris[1:]:
            server.prepare(uri)
        assert len(server.listeners) == 1 and server.fingerprint.startswith('sha-256 ')

        def session(uri):
            connector = ConnectorDirect(expected_fingerprint=server.fingerprint)
            connector_path = connector.prepare(secure(host, port=None))
            passive = gevent.spawn(server.complete, connector_path)
            ta = connector.complete([uri])
            tb = passive.get()
            exchange(ta, tb)
            close(ta, tb)

        with gevent.Timeout(T):
            gevent.joinall([gevent.spawn(session, uri) for uri in uris], raise_error=True)
    finally:
        server.close()


def test_server_tls_with_a_ca_verified_certificate(ca):
    cert = ca.issue_cert('127.0.0.1')
    server = MSRPServer()
    try:
        uri = secure(credentials=server_context(cert))
        server.prepare(uri)
        connector = ConnectorDirect()
        with gevent.Timeout(T):
            connector_path = connector.prepare(secure(port=None, credentials=client_context(ca)))
            passive = gevent.spawn(server.complete, connector_path)
            ta = connector.complete([uri])
            tb = passive.get()
        exchange(ta, tb)
        close(ta, tb)
    finally:
        server.close()
