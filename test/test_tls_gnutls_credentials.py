"""GnuTLS-style TLS credentials (what SIP SIMPLE clients pass as ``URI(credentials=...)``) on every msrps path.

The credentials are the stand-ins of test/gnutls_style.py (``.cert`` /
``.key`` / ``.trusted`` with ``export()`` -> PEM str or bytes, and
``.verify_peer``), with certificates made by trustme.  Direct connections run
over real loopback TLS; the relay tests run a real Kamailio whose certificate
is signed by a CA that only the relay settings' ``trusted`` list knows.
"""

import logging
import os
import ssl

import gevent
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))

from gnutls_style import (  # noqa: E402
    GnuTLSLikeCredentials, PEMObject, make_gnutls_credentials, make_gnutls_pair)

from msrplib import MSRPError, tls  # noqa: E402
from msrplib.connect import (  # noqa: E402
    AcceptorDirect, ConnectorDirect, MSRPBindSessionTimeout, MSRPCertificateError, MSRPConnectError, MSRPServer)
from msrplib.protocol import URI  # noqa: E402
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPRelaySettings  # noqa: E402
from msrplib.session import GreenMSRPSession  # noqa: E402
from msrplib.tls import MSRPCredentialsError  # noqa: E402
from msrplib.transport import ConnectionClosed, MSRPTransactionError  # noqa: E402

T = 5
PEM_KINDS = [pytest.param(False, id='pem-str'), pytest.param(True, id='pem-bytes')]

pytestmark = pytest.mark.usefixtures('short_connect_timeouts')


@pytest.fixture(scope='module')
def ca():
    return trustme.CA()


@pytest.fixture(scope='module')
def other_ca():
    """A CA that nobody in these tests trusts unless told to."""
    return trustme.CA()


def secure(credentials=None, port=0, host='127.0.0.1'):
    return URI(host=host, port=port, use_tls=True, credentials=credentials)


def connect(acceptor_credentials, connector_credentials, connector=None, acceptor=None):
    """A direct msrps connection; returns (connector transport, acceptor transport).

    Whatever fails, both sides are finished and cleaned up; an exception of
    the connector side is raised first, then one of the acceptor side.
    """
    acceptor = acceptor or AcceptorDirect()
    connector = connector or ConnectorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure(acceptor_credentials))
        try:
            connector_path = connector.prepare(secure(connector_credentials, port=None))
            passive = gevent.spawn(acceptor.complete, connector_path)
            try:
                active = connector.complete(acceptor_path)
            except BaseException:
                passive.join()
                if passive.successful():
                    passive.value.loseConnection()
                raise
            finally:
                connector.cleanup()
            return active, passive.get()
        finally:
            acceptor.cleanup()


def exchange(ta, tb):
    sa, sb = GreenMSRPSession(ta), GreenMSRPSession(tb)
    with gevent.Timeout(T):
        sa.deliver_chunk(sa.make_message(b'over gnutls-style credentials', 'text/plain'))
        assert sb.receive_chunk().data == b'over gnutls-style credentials'
        sb.deliver_chunk(sb.make_message(b'and back', 'text/plain'))
        assert sa.receive_chunk().data == b'and back'
        sa.shutdown()
        sb.shutdown()


def peer_der(transport):
    return transport._sock.getpeercert(binary_form=True)


def leaf_der(credentials):
    """The DER of the certificate in GnuTLS-style ``credentials``."""
    pem = credentials.cert.export()
    return x509.load_pem_x509_certificate(pem.encode('ascii') if isinstance(pem, str) else pem).public_bytes(
        serialization.Encoding.DER)


# ---------------------------------------------------------------------------
# Direct connections


@pytest.mark.parametrize('as_bytes', PEM_KINDS)
@pytest.mark.parametrize('direction', ['alice-calls-bob', 'bob-calls-alice'])
def test_verify_peer_both_ends_with_a_trusted_ca(ca, as_bytes, direction):
    alice, bob = make_gnutls_pair(ca, verify_peer=True, as_bytes=as_bytes)
    caller, callee = (alice, bob) if direction == 'alice-calls-bob' else (bob, alice)
    acceptor = AcceptorDirect()
    ta, tb = connect(callee, caller, acceptor=acceptor)
    # each side presented its own certificate, and each saw the other's
    assert peer_der(ta) == leaf_der(callee)
    assert peer_der(tb) == leaf_der(caller)
    assert acceptor.fingerprint == tls.certificate_fingerprint(leaf_der(callee))
    exchange(ta, tb)


@pytest.mark.parametrize('as_bytes', PEM_KINDS)
def test_verify_peer_false_connects_unauthenticated_with_a_warning(other_ca, as_bytes, caplog):
    # nobody trusts other_ca: with verify_peer false that does not matter (as msrps without credentials)
    callee = make_gnutls_credentials(other_ca, trusted=[], verify_peer=False, as_bytes=as_bytes)
    caller = make_gnutls_credentials(other_ca, trusted=[], verify_peer=False, as_bytes=as_bytes)
    with caplog.at_level(logging.WARNING, logger='msrplib'):
        ta, tb = connect(callee, caller)
    assert 'is not authenticated' in caplog.text
    assert peer_der(ta) == leaf_der(callee)
    exchange(ta, tb)


def test_verify_peer_true_logs_no_unauthenticated_warning(ca, caplog):
    caller, callee = make_gnutls_pair(ca)
    with caplog.at_level(logging.WARNING, logger='msrplib'):
        ta, tb = connect(callee, caller)
    assert 'is not authenticated' not in caplog.text
    exchange(ta, tb)


def test_verify_peer_false_still_checks_an_expected_fingerprint(ca, other_ca):
    callee = make_gnutls_credentials(other_ca, verify_peer=False)
    caller = make_gnutls_credentials(ca, verify_peer=False)
    wrong = tls.TLSCredentials.ephemeral().fingerprint
    with pytest.raises(MSRPCertificateError) as info:
        connect(callee, caller, connector=ConnectorDirect(expected_fingerprint=wrong))
    assert info.value.actual == tls.certificate_fingerprint(leaf_der(callee))
    # and the right one passes
    right = tls.certificate_fingerprint(leaf_der(callee))
    ta, tb = connect(callee, caller, connector=ConnectorDirect(expected_fingerprint=right))
    exchange(ta, tb)


@pytest.mark.parametrize('trusted', ['other-ca', 'none', 'empty'])
def test_connector_refuses_a_server_certificate_not_signed_by_the_trusted_ca(ca, other_ca, trusted):
    # none/empty: the system's CAs, which do not know a trustme CA either
    callee = make_gnutls_credentials(other_ca, verify_peer=False)
    caller = make_gnutls_credentials(ca, trusted={'other-ca': [ca], 'none': [], 'empty': []}[trusted])
    if trusted == 'none':
        caller.trusted = None
    with pytest.raises(MSRPCertificateError, match='does not verify'):
        connect(callee, caller)


@pytest.mark.parametrize('client, refusal', [
    ('signed by another CA', 'does not verify'),
    ('without certificate', 'sent no certificate'),
])
def test_acceptor_with_verify_peer_refuses_a_client_it_cannot_verify(ca, other_ca, client, refusal):
    callee = make_gnutls_credentials(ca, verify_peer=True)
    if client == 'signed by another CA':
        caller = make_gnutls_credentials(other_ca, trusted=[ca], verify_peer=True)
    else:
        caller = make_gnutls_credentials(ca, certificate=False, verify_peer=True)
    acceptor = AcceptorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(secure(callee))
        connector = ConnectorDirect()
        connector_path = connector.prepare(secure(caller, port=None))
        passive = gevent.spawn(acceptor.complete, connector_path)
        # TLS 1.3: the client learns of the refusal only when it reads, i.e. while binding
        with pytest.raises((ConnectionClosed, MSRPTransactionError, MSRPConnectError)):
            connector.complete(acceptor_path)
        passive.join()
    assert isinstance(passive.exception, MSRPCertificateError), passive.exception
    assert refusal in str(passive.exception)


def test_client_without_certificate_verifies_the_server(ca):
    callee = make_gnutls_credentials(ca, verify_peer=False)
    caller = make_gnutls_credentials(ca, certificate=False, verify_peer=True)
    ta, tb = connect(callee, caller)
    assert peer_der(tb) is None
    assert peer_der(ta) == leaf_der(callee)
    exchange(ta, tb)


def test_acceptor_without_certificate_presents_a_self_signed_one(ca):
    callee = GnuTLSLikeCredentials(verify_peer=False)
    acceptor = AcceptorDirect()
    ta, tb = connect(callee, make_gnutls_credentials(ca, verify_peer=False), acceptor=acceptor,
                     connector=ConnectorDirect())
    assert acceptor.fingerprint == tls.certificate_fingerprint(peer_der(ta))
    exchange(ta, tb)


def test_the_same_object_is_converted_once_and_again_when_it_changes(ca, other_ca):
    credentials = make_gnutls_credentials(ca)
    first = tls.from_gnutls(credentials)
    assert tls.from_gnutls(credentials) is first
    assert tls.server_context(credentials)[0] is first.server_context()
    credentials.trusted = credentials.trusted + (PEMObject(other_ca.cert_pem.bytes()),)
    second = tls.from_gnutls(credentials)
    assert second is not first and second.ca_pem.count('BEGIN CERTIFICATE') == 2


# ---------------------------------------------------------------------------
# MSRPServer


def test_msrp_server_with_gnutls_credentials(ca):
    caller, callee = make_gnutls_pair(ca, as_bytes=True)
    server = MSRPServer()
    try:
        uri = secure(callee)
        server.prepare(uri)
        assert server.fingerprint == tls.certificate_fingerprint(leaf_der(callee))
        with gevent.Timeout(T):
            connector = ConnectorDirect()
            connector_path = connector.prepare(secure(caller, port=None))
            passive = gevent.spawn(server.complete, connector_path)
            ta = connector.complete([uri])
            tb = passive.get()
        assert peer_der(tb) == leaf_der(caller)
        exchange(ta, tb)
    finally:
        server.close()


def test_msrp_server_with_verify_peer_drops_an_untrusted_client(ca, other_ca, monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.5)
    callee = make_gnutls_credentials(ca, verify_peer=True)
    caller = make_gnutls_credentials(other_ca, trusted=[ca], verify_peer=True)
    server = MSRPServer()
    try:
        uri = secure(callee)
        server.prepare(uri)
        with gevent.Timeout(T):
            connector = ConnectorDirect()
            connector_path = connector.prepare(secure(caller, port=None))
            passive = gevent.spawn(server.complete, connector_path)
            with pytest.raises((ConnectionClosed, MSRPTransactionError, MSRPConnectError)):
                connector.complete([uri])
            passive.join()
        assert isinstance(passive.exception, MSRPBindSessionTimeout)
    finally:
        server.close()


# ---------------------------------------------------------------------------
# Unusable objects


class Exported:
    def __init__(self, value):
        self.value = value

    def export(self):
        return self.value


def _bad_objects(ca, other_ca):
    good = make_gnutls_credentials(ca)
    stranger = make_gnutls_credentials(other_ca)
    return {
        'cert-not-pem': GnuTLSLikeCredentials(Exported('not a certificate'), good.key, good.trusted, True),
        'key-not-pem': GnuTLSLikeCredentials(good.cert, Exported(b'-----BEGIN PRIVATE KEY-----\nAAAA\n'
                                                                 b'-----END PRIVATE KEY-----\n'), good.trusted, True),
        'key-of-another-cert': GnuTLSLikeCredentials(good.cert, stranger.key, good.trusted, True),
        'cert-without-key': GnuTLSLikeCredentials(good.cert, None, good.trusted, True),
        'export-returns-int': GnuTLSLikeCredentials(Exported(42), good.key, good.trusted, True),
        'export-not-ascii': GnuTLSLikeCredentials(Exported('-----BEGIN CERTIFICATE-----\u00e9'), good.key),
        'cert-without-export': GnuTLSLikeCredentials(object(), good.key, good.trusted, True),
        'trusted-not-pem': GnuTLSLikeCredentials(good.cert, good.key, [Exported('garbage')], True),
        'trusted-not-a-list': GnuTLSLikeCredentials(good.cert, good.key, None, True),
    }


BAD = ['cert-not-pem', 'key-not-pem', 'key-of-another-cert', 'cert-without-key', 'export-returns-int',
       'export-not-ascii', 'cert-without-export', 'trusted-not-pem', 'trusted-not-a-list']


def bad_object(ca, other_ca, name):
    credentials = _bad_objects(ca, other_ca)[name]
    if name == 'trusted-not-a-list':
        credentials.trusted = 7
    return credentials


@pytest.mark.parametrize('name', BAD)
def test_unusable_credentials_raise_the_documented_error(ca, other_ca, name):
    credentials = bad_object(ca, other_ca, name)
    assert issubclass(MSRPCredentialsError, MSRPError)
    with pytest.raises(MSRPCredentialsError):
        tls.from_gnutls(credentials)
    with pytest.raises(MSRPCredentialsError):
        tls.server_context(credentials)
    with pytest.raises(MSRPCredentialsError):
        tls.client_context(credentials)
    # where an application meets them: the acceptor's prepare(), the connector's complete()
    with pytest.raises(MSRPCredentialsError):
        AcceptorDirect().prepare(secure(credentials))
    with pytest.raises(MSRPCredentialsError):
        MSRPServer().prepare(secure(credentials))
    acceptor = AcceptorDirect()
    path = acceptor.prepare(secure(make_gnutls_credentials(ca, verify_peer=False)))
    connector = ConnectorDirect()
    try:
        connector.prepare(secure(credentials, port=None))
        with gevent.Timeout(T), pytest.raises(MSRPCredentialsError):
            connector.complete(path)
    finally:
        connector.cleanup()
        acceptor.cleanup()
    relay = MSRPRelaySettings('relay.test', 'alice', 'secret', host='127.0.0.1', port=1, credentials=credentials)
    with gevent.Timeout(T), pytest.raises(MSRPCredentialsError):
        ConnectorRelay(relay).prepare()


def test_objects_that_are_not_credentials_still_raise_type_error():
    with pytest.raises(TypeError):
        tls.server_context('cert.pem')
    with pytest.raises(TypeError):
        tls.client_context(42)
    assert not tls.is_gnutls_style(ssl.create_default_context())
    assert not tls.is_gnutls_style(tls.TLSCredentials.ephemeral())
    assert tls.is_gnutls_style(GnuTLSLikeCredentials())


# ---------------------------------------------------------------------------
# A real relay (Kamailio) whose CA only the relay settings' credentials trust


@pytest.fixture
def kamailio(msrp_relay):
    """The session's Kamailio relay (msrplib's pytest plugin)."""
    return msrp_relay


def relay_settings(kamailio, credentials, domain=None):
    return MSRPRelaySettings(domain or kamailio.domain, kamailio.username, kamailio.password,
                             host=kamailio.host, port=kamailio.tls_port, use_tls=True, credentials=credentials)


def test_kamailio_ca_is_not_a_system_ca(kamailio):
    # what makes the next test meaningful: the system's CAs alone refuse this relay
    relay = relay_settings(kamailio, None)
    with gevent.Timeout(T), pytest.raises(MSRPCertificateError):
        ConnectorRelay(relay).prepare()


@pytest.mark.parametrize('as_bytes', PEM_KINDS)
def test_relay_session_trusting_the_ca_from_the_relay_settings(kamailio, as_bytes):
    # the relay's CA is only in .trusted; the endpoints' own certificates come from another CA
    own = trustme.CA()
    credentials = make_gnutls_credentials(own, trusted=[kamailio.ca], verify_peer=True, as_bytes=as_bytes)
    connector = ConnectorRelay(relay_settings(kamailio, credentials))
    acceptor = AcceptorRelay(relay_settings(kamailio, credentials))
    with gevent.Timeout(10):
        acceptor_path = acceptor.prepare()
        connector_path = connector.prepare()
        passive = gevent.spawn(acceptor.complete, connector_path)
        try:
            ta = connector.complete(acceptor_path)
            tb = passive.get()
        finally:
            connector.cleanup()
            acceptor.cleanup()
    with open(kamailio.cert_path, 'rb') as f:
        relay_der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    assert peer_der(ta) == relay_der and peer_der(tb) == relay_der
    exchange(ta, tb)


def test_relay_certificate_from_a_ca_not_in_trusted_is_refused(kamailio, other_ca):
    credentials = make_gnutls_credentials(other_ca, verify_peer=True)
    with gevent.Timeout(T), pytest.raises(MSRPCertificateError, match='does not verify'):
        ConnectorRelay(relay_settings(kamailio, credentials)).prepare()


def test_relay_certificate_is_checked_against_the_relay_domain(kamailio):
    # the right CA, but the certificate is not issued for this domain
    credentials = make_gnutls_credentials(trustme.CA(), trusted=[kamailio.ca], verify_peer=True)
    with gevent.Timeout(T), pytest.raises(MSRPCertificateError):
        ConnectorRelay(relay_settings(kamailio, credentials, domain='other.test')).prepare()


def test_relay_with_verify_peer_false_connects_unauthenticated_with_a_warning(kamailio, other_ca, caplog):
    credentials = make_gnutls_credentials(other_ca, trusted=None, verify_peer=False)
    connector = ConnectorRelay(relay_settings(kamailio, credentials))
    try:
        with caplog.at_level(logging.WARNING, logger='msrplib'), gevent.Timeout(T):
            path = connector.prepare()
        assert len(path) == 2 and path[0].use_tls and 'is not authenticated' in caplog.text
    finally:
        connector.cleanup()


def test_direct_caller_verifies_a_tls_relay_with_gnutls_credentials(kamailio):
    # ConnectorDirect -> AcceptorRelay: the caller checks the relay with its own local_uri.credentials
    credentials = make_gnutls_credentials(trustme.CA(), trusted=[kamailio.ca], verify_peer=True)
    acceptor = AcceptorRelay(relay_settings(kamailio, credentials))
    connector = ConnectorDirect()
    with gevent.Timeout(10):
        acceptor_path = acceptor.prepare()
        connector_path = connector.prepare(URI(host=kamailio.host, use_tls=True, credentials=credentials))
        passive = gevent.spawn(acceptor.complete, connector_path)
        try:
            ta = connector.complete(acceptor_path)
            tb = passive.get()
        finally:
            connector.cleanup()
            acceptor.cleanup()
    exchange(ta, tb)
