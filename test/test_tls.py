import hashlib
import shutil
import socket
import ssl
import subprocess

import gevent
import gevent.socket
import gevent.ssl
import pytest
import trustme

from msrplib import MSRPError
from msrplib import tls
from msrplib.tls import (MSRPCertificateError, TLSCredentials, certificate_fingerprint,
                         check_peer_certificate, client_context, fingerprint_matches,
                         parse_fingerprint, server_context)

SHA256_OF_EMPTY = ('sha-256 E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:'
                   '27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55')


@pytest.fixture(scope='module')
def credentials():
    return TLSCredentials.ephemeral()


@pytest.fixture(scope='module')
def ca():
    return trustme.CA()


def handshake(server_ctx, client_ctx, server_hostname=None, host='127.0.0.1', family=socket.AF_INET):
    """Connect a gevent client to a gevent server greenlet over loopback and
    do the TLS handshake on both sides; return (client_ssl, server_ssl).
    A client-side failure is raised after the server greenlet has ended."""
    listener = gevent.socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        # A socket timeout turns a non-cooperative (blocking) wrap into an
        # error instead of a hang the gevent.Timeout could not interrupt.
        conn.settimeout(5)
        try:
            sslsock = tls.wrap_socket(conn, server_ctx, server_side=True)
            sslsock.sendall(b'hello')
            return sslsock
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            conn.close()
            return e

    with gevent.Timeout(5):
        server = gevent.spawn(serve)
        sock = gevent.socket.create_connection(listener.getsockname()[:2])
        sock.settimeout(5)
        try:
            client = tls.wrap_socket(sock, client_ctx, server_hostname=server_hostname)
            assert client.recv(5) == b'hello'
        except BaseException:
            sock.close()
            raise
        finally:
            server.join()
            listener.close()
    assert isinstance(server.value, gevent.ssl.SSLSocket), server.value
    return client, server.value


def close(*sockets):
    for sock in sockets:
        sock.close()


# Fingerprints

def test_fingerprint_known_answer():
    assert certificate_fingerprint(b'') == SHA256_OF_EMPTY


def test_fingerprint_format_matches_hashlib(credentials):
    der = credentials.certificate_der
    for name, hash_name in [('sha-1', 'sha1'), ('sha-224', 'sha224'), ('sha-256', 'sha256'),
                            ('sha-384', 'sha384'), ('sha-512', 'sha512')]:
        expected = hashlib.new(hash_name, der).hexdigest().upper()
        expected = ':'.join(expected[i:i + 2] for i in range(0, len(expected), 2))
        assert certificate_fingerprint(der, name) == '%s %s' % (name, expected)
        assert certificate_fingerprint(der, name.upper()) == '%s %s' % (name, expected)


@pytest.mark.skipif(shutil.which('openssl') is None, reason='no openssl command')
def test_fingerprint_matches_openssl_command(credentials):
    output = subprocess.run(['openssl', 'x509', '-noout', '-fingerprint', '-sha256'],
                            input=credentials.cert_pem, capture_output=True, check=True).stdout
    # e.g. "sha256 Fingerprint=AB:CD:..." (wording varies between versions)
    assert credentials.fingerprint == 'sha-256 ' + output.decode().strip().split('=', 1)[1]


@pytest.mark.parametrize('algorithm', sorted(tls.HASH_ALGORITHMS))
def test_fingerprint_round_trip(credentials, algorithm):
    der = credentials.certificate_der
    text = certificate_fingerprint(der, algorithm)
    assert parse_fingerprint(text) == (algorithm, hashlib.new(tls.HASH_ALGORITHMS[algorithm], der).digest())
    assert fingerprint_matches(der, text)
    assert not fingerprint_matches(der + b'x', text)


def test_parse_fingerprint_is_lenient_about_case_and_whitespace():
    algorithm, digest = parse_fingerprint('  SHA-256 \t' + SHA256_OF_EMPTY.split()[1].lower() + ' \r\n')
    assert algorithm == 'sha-256'
    assert digest == hashlib.sha256(b'').digest()


@pytest.mark.parametrize('text', [
    '',
    '   ',
    'sha-256',
    SHA256_OF_EMPTY.split()[1],
    'md5 D4:1D:8C:D9:8F:00:B2:04:E9:80:09:98:EC:F8:42:7E',
    'sha256 ' + SHA256_OF_EMPTY.split()[1],
    SHA256_OF_EMPTY[:-3],                    # one byte short
    SHA256_OF_EMPTY + ':00',                 # one byte long
    SHA256_OF_EMPTY + ':',                   # trailing colon
    SHA256_OF_EMPTY.replace(':', ''),        # no separators
    SHA256_OF_EMPTY.replace('E3:', 'E:3'),
    SHA256_OF_EMPTY.replace('E3', 'G3'),
    SHA256_OF_EMPTY.replace('E3', '\uff13\uff13'),  # full-width digits
    'sha-1 ' + SHA256_OF_EMPTY.split()[1],   # digest length of another hash
])
def test_malformed_fingerprint_raises_value_error(text):
    with pytest.raises(ValueError):
        parse_fingerprint(text)
    with pytest.raises(ValueError):
        fingerprint_matches(b'', text)


def test_unknown_algorithm_raises_value_error():
    with pytest.raises(ValueError):
        certificate_fingerprint(b'', 'md5')


def test_parse_fingerprint_rejects_bytes():
    with pytest.raises(TypeError):
        parse_fingerprint(SHA256_OF_EMPTY.encode())


# Credentials

def test_ephemeral_credentials(credentials):
    assert credentials.fingerprint == certificate_fingerprint(credentials.certificate_der)
    assert credentials.fingerprint.startswith('sha-256 ')
    assert TLSCredentials.ephemeral().fingerprint != credentials.fingerprint
    context = credentials.server_context()
    assert isinstance(context, gevent.ssl.SSLContext)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert credentials.server_context() is context


def test_credentials_from_files(tmp_path, credentials):
    (tmp_path / 'cert.pem').write_bytes(credentials.cert_pem)
    (tmp_path / 'key.pem').write_bytes(credentials.key_pem)
    (tmp_path / 'both.pem').write_bytes(credentials.key_pem + credentials.cert_pem)
    separate = TLSCredentials.from_files(tmp_path / 'cert.pem', tmp_path / 'key.pem')
    combined = TLSCredentials.from_files(tmp_path / 'both.pem')
    assert separate.fingerprint == combined.fingerprint == credentials.fingerprint
    combined.server_context()


def test_credentials_from_trustme_chain(ca):
    issued = ca.issue_cert('localhost')
    chain = b''.join(blob.bytes() for blob in issued.cert_chain_pems)
    loaded = TLSCredentials(chain, issued.private_key_pem.bytes())
    assert loaded.certificate_der == ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())
    loaded.server_context()


def test_invalid_credentials_raise_value_error(credentials):
    other = TLSCredentials.ephemeral()
    with pytest.raises(ValueError):
        TLSCredentials(credentials.cert_pem, other.key_pem)
    with pytest.raises(ValueError):
        TLSCredentials(b'garbage', credentials.key_pem)
    with pytest.raises(ValueError):
        TLSCredentials(credentials.cert_pem, b'garbage')


def test_server_context_helper(credentials):
    assert server_context(credentials) == (credentials.server_context(), credentials.fingerprint)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert server_context(context) == (context, None)
    fresh, fingerprint = server_context()
    assert isinstance(fresh, gevent.ssl.SSLContext)
    parse_fingerprint(fingerprint)
    with pytest.raises(TypeError):
        server_context('cert.pem')


def test_client_context_helper(credentials):
    context = ssl.create_default_context()
    assert client_context(context) is context
    for made in (client_context(), client_context(expected_fingerprint=credentials.fingerprint),
                 client_context(credentials)):
        assert isinstance(made, gevent.ssl.SSLContext)
        assert made.verify_mode == ssl.CERT_NONE
        assert not made.check_hostname
        assert made.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError):
        client_context(expected_fingerprint='sha-256 00')


def test_certificate_error_is_msrp_error():
    error = MSRPCertificateError('mismatch', expected='a', actual='b')
    assert isinstance(error, MSRPError)
    assert (error.expected, error.actual) == ('a', 'b')


# Handshakes over real gevent sockets

def test_ephemeral_handshake_with_fingerprint(credentials):
    server_ctx, fingerprint = server_context(credentials)
    client, server = handshake(server_ctx, client_context(expected_fingerprint=fingerprint))
    try:
        assert isinstance(client, gevent.ssl.SSLSocket)
        assert certificate_fingerprint(client.getpeercert(binary_form=True)) == fingerprint
        check_peer_certificate(client, fingerprint)
        check_peer_certificate(client, None)
        # any of several advertised fingerprints may match
        check_peer_certificate(client, [SHA256_OF_EMPTY, fingerprint])
    finally:
        close(client, server)


def test_wrong_fingerprint_raises_certificate_error(credentials):
    server_ctx, fingerprint = server_context(credentials)
    client, server = handshake(server_ctx, client_context(expected_fingerprint=SHA256_OF_EMPTY))
    try:
        with pytest.raises(MSRPCertificateError) as info:
            check_peer_certificate(client, SHA256_OF_EMPTY)
        assert info.value.expected == SHA256_OF_EMPTY
        assert info.value.actual == fingerprint
        assert SHA256_OF_EMPTY in str(info.value) and fingerprint in str(info.value)
        wrong_sha1 = 'sha-1 ' + ':'.join(['00'] * 20)
        with pytest.raises(MSRPCertificateError) as info:
            check_peer_certificate(client, wrong_sha1)
        assert info.value.actual == certificate_fingerprint(client.getpeercert(True), 'sha-1')
    finally:
        close(client, server)


def test_missing_peer_certificate_raises_certificate_error(credentials):
    # The server side: by default the client is not asked for a certificate.
    client, server = handshake(credentials.server_context(), client_context())
    try:
        with pytest.raises(MSRPCertificateError) as info:
            check_peer_certificate(server, credentials.fingerprint)
        assert info.value.actual is None
    finally:
        close(client, server)


def test_client_certificate_checked_by_fingerprint(credentials):
    client_credentials = TLSCredentials.ephemeral()
    # Stdlib ssl can only request a client certificate it can verify, so the
    # server here trusts the client's self-signed certificate explicitly.
    server_ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    credentials.load_into(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=client_credentials.cert_pem.decode())
    client, server = handshake(server_ctx, client_context(client_credentials))
    try:
        check_peer_certificate(server, client_credentials.fingerprint)
        with pytest.raises(MSRPCertificateError):
            check_peer_certificate(server, credentials.fingerprint)
    finally:
        close(client, server)


@pytest.mark.parametrize('hostname', ['localhost', '127.0.0.1'])
def test_ephemeral_certificate_names_verify(credentials, hostname):
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=credentials.cert_pem.decode())
    client, server = handshake(credentials.server_context(), client_ctx, server_hostname=hostname)
    close(client, server)


def test_ephemeral_certificate_ipv6_name_verifies(credentials):
    if not socket.has_ipv6:
        pytest.skip('no IPv6')
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(('::1', 0))
    except OSError:
        pytest.skip('no IPv6 loopback')
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=credentials.cert_pem.decode())
    client, server = handshake(credentials.server_context(), client_ctx, server_hostname='::1',
                               host='::1', family=socket.AF_INET6)
    close(client, server)


@pytest.fixture(scope='module')
def ca_server_context(ca):
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert('localhost', '127.0.0.1').configure_cert(context)
    return context


def trusting_client_context(ca):
    # A stdlib context on purpose: tls.wrap_socket must still be cooperative.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize('hostname', ['localhost', '127.0.0.1'])
def test_ca_verified_handshake(ca, ca_server_context, hostname):
    assert server_context(ca_server_context) == (ca_server_context, None)
    client_ctx = client_context(trusting_client_context(ca))
    assert client_ctx.check_hostname and client_ctx.verify_mode == ssl.CERT_REQUIRED
    client, server = handshake(ca_server_context, client_ctx, server_hostname=hostname)
    try:
        assert isinstance(client, gevent.ssl.SSLSocket)
        assert client.getpeercert()['subjectAltName']
    finally:
        close(client, server)


def test_ca_wrong_hostname_fails(ca, ca_server_context):
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(ca_server_context, client_context(trusting_client_context(ca)),
                  server_hostname='example.com')
    assert 'hostname' in str(info.value).lower() or 'ip address' in str(info.value).lower()


def test_ca_untrusted_fails(ca_server_context):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ca_server_context, client_context(trusting_client_context(trustme.CA())),
                  server_hostname='localhost')


def test_check_hostname_requires_server_hostname(ca, ca_server_context):
    with pytest.raises(ValueError):
        handshake(ca_server_context, client_context(trusting_client_context(ca)))
