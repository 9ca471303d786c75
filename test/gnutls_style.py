"""GnuTLS-style TLS credentials for tests, as SIP SIMPLE clients pass them to msrplib.

Such clients build python-gnutls ``X509Credentials(cert, key, trusted)`` and
set ``verify_peer``; msrplib only reads ``.cert`` / ``.key`` (``export()`` ->
PEM), ``.trusted`` (CA certificates with the same ``export()``) and
``.verify_peer``.  The stand-ins here have exactly that surface, with PEM
as str (python-gnutls on Python 2) or bytes (on Python 3), and certificates
made by trustme::

    ca = trustme.CA()
    caller, callee = make_gnutls_pair(ca)                 # both trust ca, verify_peer=True
    URI(host='127.0.0.1', port=0, use_tls=True, credentials=callee)

gnutls itself is never imported.
"""

import trustme

__all__ = ['PEMObject', 'GnuTLSLikeCredentials', 'make_gnutls_credentials', 'make_gnutls_pair',
           'DEFAULT_NAMES']

#: The names a test certificate is issued for: loopback in both families.
DEFAULT_NAMES = ('127.0.0.1', '::1', 'localhost')


class PEMObject:
    """A certificate or key as python-gnutls presents it: ``export()`` returns its PEM."""

    def __init__(self, pem, as_bytes=False):
        if isinstance(pem, bytes) and not as_bytes:
            pem = pem.decode('ascii')
        elif isinstance(pem, str) and as_bytes:
            pem = pem.encode('ascii')
        self.pem = pem

    def export(self):
        """The PEM text (str or bytes, as chosen at construction)."""
        return self.pem


class GnuTLSLikeCredentials:
    """The attributes of ``gnutls.connection.X509Credentials`` that msrplib reads.

    ``cert`` and ``key`` are :class:`PEMObject` or None, ``trusted`` a tuple
    of :class:`PEMObject` (CA certificates), ``verify_peer`` a bool.
    """

    def __init__(self, cert=None, key=None, trusted=(), verify_peer=False):
        self.cert = cert
        self.key = key
        self.trusted = tuple(trusted) if trusted is not None else None
        self.verify_peer = verify_peer

    def __repr__(self):
        return '<GnuTLSLikeCredentials cert=%s trusted=%d verify_peer=%s>' % (
            'yes' if self.cert is not None else 'no', len(self.trusted or ()), self.verify_peer)


def make_gnutls_credentials(ca=None, names=DEFAULT_NAMES, trusted=None, verify_peer=True, as_bytes=False,
                            certificate=True):
    """GnuTLS-style credentials holding a certificate for ``names`` issued by ``ca``.

    ``ca``: a ``trustme.CA`` (a new one when None). ``trusted``: the CAs
    (``trustme.CA`` objects) to trust, by default ``[ca]``; pass ``[]`` for
    none. ``as_bytes``: every ``export()`` returns bytes instead of str.
    ``certificate=False``: no certificate nor key (a client without one).
    """
    if ca is None:
        ca = trustme.CA()
    if trusted is None:
        trusted = [ca]
    cert = key = None
    if certificate:
        issued = ca.issue_cert(*names)
        cert = PEMObject(issued.cert_chain_pems[0].bytes(), as_bytes)
        key = PEMObject(issued.private_key_pem.bytes(), as_bytes)
    return GnuTLSLikeCredentials(cert, key, [PEMObject(other.cert_pem.bytes(), as_bytes) for other in trusted],
                                 verify_peer)


def make_gnutls_pair(ca=None, verify_peer=True, as_bytes=False):
    """Credentials for both ends of a session: two certificates from one CA
    (a new one when None), each side trusting it. Returns ``(caller, callee)``."""
    if ca is None:
        ca = trustme.CA()
    return (make_gnutls_credentials(ca, verify_peer=verify_peer, as_bytes=as_bytes),
            make_gnutls_credentials(ca, verify_peer=verify_peer, as_bytes=as_bytes))
