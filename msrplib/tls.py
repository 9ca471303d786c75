"""TLS helpers for ``msrps:`` URIs (RFC 4975 §14).

MSRP endpoints usually present self-signed certificates; a peer's identity
comes from the certificate fingerprint it advertised in SDP
(``a=fingerprint:``, RFC 8122), checked after the handshake with
:func:`check_peer_certificate`.

Contexts built here are :class:`gevent.ssl.SSLContext` instances, so their
``wrap_socket`` gives cooperative sockets. A plain :class:`ssl.SSLContext`
supplied by the user would give a blocking socket that stalls every
greenlet; :func:`wrap_socket` wraps cooperatively with either kind.

Credentials may also be a GnuTLS-style object, as SIP SIMPLE clients pass
them (``URI(..., credentials=account.tls_credentials)``): ``.cert`` and
``.key`` whose ``export()`` returns PEM, a list ``.trusted`` of CA
certificates with the same ``export()``, and ``.verify_peer``.  It is
duck-typed (gnutls is never imported) and turned into contexts by
:func:`from_gnutls`; see doc/tls.md for the rules.
"""

import datetime
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import tempfile
from collections import OrderedDict

import gevent.ssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from msrplib import MSRPError

__all__ = ['MSRPCertificateError', 'MSRPCredentialsError', 'HASH_ALGORITHMS', 'certificate_fingerprint',
           'parse_fingerprint', 'fingerprint_matches', 'TLSCredentials', 'GnuTLSStyleCredentials',
           'is_gnutls_style', 'from_gnutls', 'verifies_peer', 'certificate_failure',
           'server_context', 'client_context', 'wrap_socket',
           'check_peer_certificate']

#: IANA "Hash Function Textual Names" accepted in fingerprints -> hashlib name.
HASH_ALGORITHMS = {
    'sha-1': 'sha1',
    'sha-224': 'sha224',
    'sha-256': 'sha256',
    'sha-384': 'sha384',
    'sha-512': 'sha512',
}

_HEX_PAIRS = re.compile(r'[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*')


class MSRPCertificateError(MSRPError):
    """The peer's certificate failed verification.

    ``expected`` is the fingerprint (or fingerprints) the peer advertised and
    ``actual`` the fingerprint of the certificate it presented (None if it
    presented none, or if the failure was not a fingerprint mismatch).
    """

    def __init__(self, message, expected=None, actual=None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class MSRPCredentialsError(MSRPError):
    """TLS credentials that cannot be used.

    Raised for a GnuTLS-style credentials object whose certificate, key or
    trusted CAs do not export PEM that parses, whose key does not match its
    certificate, or that has a certificate without a key (or the reverse).
    """


def _hash_name(algorithm):
    try:
        return HASH_ALGORITHMS[algorithm.lower()]
    except KeyError:
        raise ValueError('unsupported fingerprint hash algorithm: %r' % (algorithm,)) from None


def certificate_fingerprint(der, algorithm='sha-256'):
    """Return the RFC 8122 fingerprint of a DER certificate, e.g.
    ``'sha-256 AB:CD:...'``. Raises ValueError for an unknown algorithm."""
    digest = hashlib.new(_hash_name(algorithm), der).digest()
    return '%s %s' % (algorithm.lower(), digest.hex(':').upper())


def parse_fingerprint(text):
    """Parse ``'sha-256 AB:CD:...'`` into ``(algorithm, digest_bytes)``.

    Case-insensitive and tolerant of surrounding whitespace. Raises ValueError
    if the text is malformed, the algorithm unknown or the digest the wrong
    length for it, TypeError if ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError('fingerprint must be a str, not %r' % (type(text).__name__,))
    parts = text.split(None, 1)
    if len(parts) != 2:
        raise ValueError('malformed fingerprint: %r' % (text,))
    algorithm = parts[0].lower()
    hash_name = _hash_name(algorithm)
    hex_text = ''.join(parts[1].split())
    if not _HEX_PAIRS.fullmatch(hex_text):
        raise ValueError('malformed fingerprint: %r' % (text,))
    digest = bytes.fromhex(hex_text.replace(':', ''))
    if len(digest) != hashlib.new(hash_name).digest_size:
        raise ValueError('wrong digest length for %s in fingerprint: %r' % (algorithm, text))
    return algorithm, digest


def fingerprint_matches(der, expected):
    """Return True if the DER certificate has the fingerprint ``expected``.
    Raises ValueError if ``expected`` is malformed."""
    algorithm, digest = parse_fingerprint(expected)
    return hmac.compare_digest(hashlib.new(HASH_ALGORITHMS[algorithm], der).digest(), digest)


class TLSCredentials:
    """A certificate chain (leaf first) and its private key, both PEM.

    Raises ValueError if either does not parse or the key does not belong to
    the leaf certificate. The key must not be encrypted. ``fingerprint`` is
    the SHA-256 fingerprint of the leaf certificate, in SDP form, and
    ``certificate_der`` the leaf certificate itself.
    """

    def __init__(self, cert_pem, key_pem):
        try:
            chain = x509.load_pem_x509_certificates(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as e:
            raise ValueError('invalid TLS credentials: %s' % e) from None
        public_format = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if chain[0].public_key().public_bytes(*public_format) != key.public_key().public_bytes(*public_format):
            raise ValueError('invalid TLS credentials: the private key does not match the certificate')
        self.cert_pem = cert_pem
        self.key_pem = key_pem
        self.certificate_der = chain[0].public_bytes(serialization.Encoding.DER)
        self.fingerprint = certificate_fingerprint(self.certificate_der)
        self._server_context = None

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self.fingerprint)

    @classmethod
    def ephemeral(cls, common_name='msrplib', hostnames=('localhost', '127.0.0.1', '::1')):
        """Create credentials with a fresh self-signed EC P-256 certificate
        valid for ``hostnames`` (DNS names and IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = []
        for hostname in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
            except ValueError:
                names.append(x509.DNSName(hostname))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(subject)
                   .issuer_name(subject)
                   .public_key(key.public_key())
                   .serial_number(int.from_bytes(secrets.token_bytes(16), 'big') >> 1)
                   # Back-dated to tolerate peers whose clocks are behind.
                   .not_valid_before(now - datetime.timedelta(days=2))
                   .not_valid_after(now + datetime.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(key, hashes.SHA256())
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cls(cert_pem, key_pem)

    @classmethod
    def from_files(cls, certfile, keyfile=None):
        """Load credentials from PEM files; ``keyfile`` defaults to
        ``certfile`` (both in one file). Raises OSError or ValueError."""
        with open(certfile, 'rb') as f:
            cert_pem = f.read()
        if keyfile is None:
            key_pem = cert_pem
        else:
            with open(keyfile, 'rb') as f:
                key_pem = f.read()
        return cls(cert_pem, key_pem)

    def load_into(self, context):
        """Load this chain and key into an SSLContext (raises ssl.SSLError)."""
        # SSLContext.load_cert_chain only reads files; the temporary
        # directory is private to this user (mkdtemp uses mode 0700).
        with tempfile.TemporaryDirectory(prefix='msrplib-tls-') as directory:
            certfile = os.path.join(directory, 'cert.pem')
            keyfile = os.path.join(directory, 'key.pem')
            for path, data in ((certfile, self.cert_pem), (keyfile, self.key_pem)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), 'wb') as f:
                    f.write(data)
            context.load_cert_chain(certfile, keyfile)

    def server_context(self):
        """Return a TLS 1.2+ server context presenting these credentials
        (built once, then cached). It does not ask for client certificates."""
        if self._server_context is None:
            context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.load_into(context)
            self._server_context = context
        return self._server_context


#: Attributes that make an object GnuTLS-style credentials (any one of them is enough).
_GNUTLS_ATTRIBUTES = ('cert', 'key', 'trusted', 'verify_peer')


def is_gnutls_style(credentials):
    """True if ``credentials`` is a GnuTLS-style credentials object: not an
    SSLContext nor a :class:`TLSCredentials`, and it has at least one of
    ``cert``, ``key``, ``trusted`` and ``verify_peer``."""
    if credentials is None or isinstance(credentials, (ssl.SSLContext, TLSCredentials, GnuTLSStyleCredentials)):
        return False
    return any(hasattr(credentials, name) for name in _GNUTLS_ATTRIBUTES)


def _pem_bytes(item, what):
    # The PEM text of a GnuTLS-style certificate or key: its export(), or the item itself if it is text.
    if not isinstance(item, (str, bytes, bytearray)):
        export = getattr(item, 'export', None)
        if not callable(export):
            raise MSRPCredentialsError('%s has no export() method: %r' % (what, item))
        item = export()
    if isinstance(item, str):
        try:
            return item.encode('ascii')
        except UnicodeEncodeError:
            raise MSRPCredentialsError('%s.export() returned text that is not PEM (not ASCII)' % (what,)) from None
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    raise MSRPCredentialsError('%s.export() returned %s, not PEM str or bytes' % (what, type(item).__name__))


def _trusted_items(trusted):
    if trusted is None:
        return []
    if isinstance(trusted, (str, bytes, bytearray)) or callable(getattr(trusted, 'export', None)):
        return [trusted]
    try:
        return list(trusted)
    except TypeError:
        raise MSRPCredentialsError('trusted must be a list of CA certificates, not %r' % (trusted,)) from None


class GnuTLSStyleCredentials:
    """What a GnuTLS-style credentials object says, checked and ready to make contexts.

    ``identity`` is a :class:`TLSCredentials` (the certificate and key) or
    None, ``ca_pem`` the trusted CA certificates as one PEM str or None,
    ``verify_peer`` whether the peer's certificate must verify against them.
    Made by :func:`from_gnutls`; contexts are built once and cached.
    """

    def __init__(self, identity, ca_pem, verify_peer):
        self.identity = identity
        self.ca_pem = ca_pem
        self.verify_peer = bool(verify_peer)
        self._ephemeral = None      # the self-signed certificate a server presents when there is no identity
        self._contexts = {}

    @property
    def fingerprint(self):
        """The SDP fingerprint of the certificate: the given one, else the
        self-signed one :meth:`server_context` made, else None."""
        identity = self.identity or self._ephemeral
        return identity.fingerprint if identity is not None else None

    def __repr__(self):
        return '<%s %s verify_peer=%s>' % (type(self).__name__, self.fingerprint or 'no certificate', self.verify_peer)

    def _trust(self, context, purpose, system_cas):
        if self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem)
        if system_cas or self.ca_pem is None:
            context.load_default_certs(purpose)

    def server_context(self):
        """A TLS 1.2+ server context presenting the certificate (a fresh
        self-signed one when there is none). With ``verify_peer`` it asks
        for a client certificate and refuses one that does not verify
        against the trusted CAs (the system's CAs when none are given), or
        a client that sends none."""
        context = self._contexts.get('server')
        if context is None:
            identity = self.identity
            if identity is None:
                identity = self._ephemeral = TLSCredentials.ephemeral()
            context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            identity.load_into(context)
            if self.verify_peer:
                context.verify_mode = ssl.CERT_REQUIRED
                self._trust(context, ssl.Purpose.CLIENT_AUTH, system_cas=False)
            self._contexts['server'] = context
        return context

    def client_context(self, check_hostname=False, system_cas=False):
        """A TLS 1.2+ client context presenting the certificate (if any) as
        client certificate. With ``verify_peer`` the server's chain must
        verify against the trusted CAs (plus the system's CAs when
        ``system_cas``, and only them when none are given), and with
        ``check_hostname`` its name too; without ``verify_peer`` nothing is
        checked here (see :func:`check_peer_certificate`)."""
        key = ('client', bool(check_hostname), bool(system_cas))
        context = self._contexts.get(key)
        if context is None:
            context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.verify_peer:
                context.check_hostname = bool(check_hostname)
                context.verify_mode = ssl.CERT_REQUIRED
                self._trust(context, ssl.Purpose.SERVER_AUTH, system_cas)
            else:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.identity is not None:
                self.identity.load_into(context)
            self._contexts[key] = context
        return context


#: Converted GnuTLS-style credentials by content, so that an object used for many sessions is
#: parsed and loaded once; bounded, least recently used first out.
_CONVERTED = OrderedDict()
_CONVERTED_MAX = 32


def from_gnutls(credentials):
    """Convert a GnuTLS-style credentials object into :class:`GnuTLSStyleCredentials`.

    Reads ``cert`` and ``key`` (each None, or with ``export()`` returning PEM
    str or bytes), ``trusted`` (None, or a list of CA certificates with the
    same ``export()``) and ``verify_peer`` (false when absent); missing
    attributes count as None. The result is cached by content, so passing
    the same object again costs only the exports. Raises
    :class:`MSRPCredentialsError` when the PEM does not parse, the key does
    not match the certificate, or only one of them is given.
    """
    cert, key = getattr(credentials, 'cert', None), getattr(credentials, 'key', None)
    if (cert is None) != (key is None):
        raise MSRPCredentialsError('TLS credentials need both a certificate and its key, or neither')
    cert_pem = _pem_bytes(cert, 'cert') if cert is not None else None
    key_pem = _pem_bytes(key, 'key') if key is not None else None
    trusted = tuple(_pem_bytes(item, 'trusted[%d]' % i)
                    for i, item in enumerate(_trusted_items(getattr(credentials, 'trusted', None))))
    verify_peer = bool(getattr(credentials, 'verify_peer', False))
    cache_key = (cert_pem, key_pem, trusted, verify_peer)
    converted = _CONVERTED.get(cache_key)
    if converted is not None:
        _CONVERTED.move_to_end(cache_key)
        return converted
    identity = None
    if cert_pem is not None:
        try:
            identity = TLSCredentials(cert_pem, key_pem)
        except ValueError as e:
            raise MSRPCredentialsError(str(e)) from None
    ca_pem = None
    if trusted:
        pems = []
        for i, pem in enumerate(trusted):
            try:
                certificates = x509.load_pem_x509_certificates(pem)
            except ValueError as e:
                raise MSRPCredentialsError('invalid trusted CA certificate trusted[%d]: %s' % (i, e)) from None
            pems.extend(c.public_bytes(serialization.Encoding.PEM).decode('ascii') for c in certificates)
        ca_pem = ''.join(pems)
    converted = GnuTLSStyleCredentials(identity, ca_pem, verify_peer)
    _CONVERTED[cache_key] = converted
    while len(_CONVERTED) > _CONVERTED_MAX:
        _CONVERTED.popitem(last=False)
    return converted


def _convert(credentials):
    # GnuTLS-style objects become GnuTLSStyleCredentials; everything else is returned as is.
    return from_gnutls(credentials) if is_gnutls_style(credentials) else credentials


def verifies_peer(credentials):
    """True if ``credentials`` make a client context that authenticates the
    server by itself: an SSLContext (its own settings apply) or GnuTLS-style
    credentials with ``verify_peer``. Raises :class:`MSRPCredentialsError`
    for unusable GnuTLS-style credentials."""
    credentials = _convert(credentials)
    if isinstance(credentials, ssl.SSLContext):
        return True
    return isinstance(credentials, GnuTLSStyleCredentials) and credentials.verify_peer


def certificate_failure(error, who='peer'):
    """Return an :class:`MSRPCertificateError` if ``error`` (an exception from
    a TLS handshake) says that the peer's certificate failed: it does not
    verify, or the peer sent none where one is required. Otherwise None
    (other failures, including the peer refusing our certificate, are
    connection errors). ``who`` names the peer in the message."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return MSRPCertificateError('Certificate of %s does not verify: %s' % (who, error.verify_message or error))
    if isinstance(error, ssl.SSLError) and error.reason == 'PEER_DID_NOT_RETURN_A_CERTIFICATE':
        return MSRPCertificateError('%s sent no certificate, and one is required' % (who,))
    return None


def server_context(credentials=None):
    """Return ``(context, fingerprint)`` for accepting ``msrps:`` connections.

    ``credentials`` is an SSLContext (returned as is, fingerprint None), a
    :class:`TLSCredentials`, GnuTLS-style credentials (see
    :func:`from_gnutls` and :meth:`GnuTLSStyleCredentials.server_context`),
    or None for fresh ephemeral credentials. The fingerprint is what to
    advertise in SDP. Raises :class:`MSRPCredentialsError` for unusable
    GnuTLS-style credentials, TypeError for anything else.
    """
    credentials = _convert(credentials)
    if isinstance(credentials, ssl.SSLContext):
        return credentials, None
    if isinstance(credentials, GnuTLSStyleCredentials):
        context = credentials.server_context()
        return context, credentials.fingerprint
    if credentials is None:
        credentials = TLSCredentials.ephemeral()
    if not isinstance(credentials, TLSCredentials):
        raise TypeError('credentials must be an SSLContext, TLSCredentials, GnuTLS-style credentials or None, '
                        'not %r' % (credentials,))
    return credentials.server_context(), credentials.fingerprint


def client_context(credentials=None, expected_fingerprint=None):
    """Return a context for opening ``msrps:`` connections.

    An SSLContext is returned as is: its CA and hostname settings apply.
    GnuTLS-style credentials with ``verify_peer`` verify the server's chain
    against their trusted CAs (not its name: MSRP URIs carry addresses).
    Otherwise the context does not verify the server's certificate, since
    MSRP peers present self-signed ones; with ``expected_fingerprint`` the
    caller must call :func:`check_peer_certificate` after the handshake,
    without it the peer is unauthenticated. A :class:`TLSCredentials` (or the
    certificate of GnuTLS-style credentials) is presented as the client
    certificate. Raises ValueError for a malformed fingerprint,
    :class:`MSRPCredentialsError` for unusable GnuTLS-style credentials,
    TypeError for credentials of any other kind.
    """
    if expected_fingerprint is not None:
        _expected_list(expected_fingerprint)
    credentials = _convert(credentials)
    if isinstance(credentials, ssl.SSLContext):
        return credentials
    if isinstance(credentials, GnuTLSStyleCredentials):
        return credentials.client_context()
    if credentials is not None and not isinstance(credentials, TLSCredentials):
        raise TypeError('credentials must be an SSLContext, TLSCredentials, GnuTLS-style credentials or None, '
                        'not %r' % (credentials,))
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if credentials is not None:
        credentials.load_into(context)
    return context


def wrap_socket(sock, context, server_side=False, server_hostname=None):
    """Wrap a connected gevent socket in TLS and do the handshake, blocking
    only the calling greenlet whatever the context's class.

    Returns a :class:`gevent.ssl.SSLSocket`. Raises ssl.SSLError
    (ssl.SSLCertVerificationError for a CA or hostname failure), OSError or
    ValueError (check_hostname without ``server_hostname``).
    """
    if isinstance(context, gevent.ssl.SSLContext):
        return context.wrap_socket(sock, server_side=server_side, server_hostname=server_hostname)
    # A stdlib context's own wrap_socket would build a blocking socket.
    return gevent.ssl.SSLSocket(sock=sock, server_side=server_side,
                                server_hostname=server_hostname, _context=context)


def _expected_list(expected):
    expected = [expected] if isinstance(expected, str) else list(expected)
    if not expected:
        raise ValueError('no expected fingerprint given')
    for fingerprint in expected:
        parse_fingerprint(fingerprint)
    return expected


def check_peer_certificate(sslsocket, expected_fingerprint=None):
    """Check the peer's certificate against the fingerprint from its SDP.

    ``expected_fingerprint`` is one fingerprint string or several (any may
    match, RFC 8122 §5); None skips the check. Raises MSRPCertificateError on
    a mismatch or if the peer sent no certificate, ValueError for a
    malformed expected fingerprint.
    """
    if expected_fingerprint is None:
        return
    expected = _expected_list(expected_fingerprint)
    der = sslsocket.getpeercert(binary_form=True)
    if der is None:
        raise MSRPCertificateError('peer sent no certificate; expected %s' % ', '.join(expected),
                                   expected=expected_fingerprint)
    if any(fingerprint_matches(der, fingerprint) for fingerprint in expected):
        return
    algorithm = parse_fingerprint(expected[0])[0]
    actual = certificate_fingerprint(der, algorithm)
    raise MSRPCertificateError('peer certificate fingerprint mismatch: expected %s, got %s'
                               % (', '.join(expected), actual),
                               expected=expected_fingerprint, actual=actual)
