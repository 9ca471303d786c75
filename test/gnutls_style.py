"""GnuTLS-style credentials as SIP SIMPLE clients pass them, duck-typed (gnutls is never imported).

Such an object has ``.cert`` and ``.key`` whose ``export()`` returns PEM (str
or bytes), a list ``.trusted`` of CA certificates with the same
``export()``, and ``.verify_peer``.  Support for them in msrplib is issue 16
point 7 (branch h16b); :func:`supported` tells whether this tree has it.
"""


class Exported:
    """A GnuTLS-style certificate or key: ``export()`` gives its PEM."""

    def __init__(self, pem):
        self._pem = pem

    def export(self):
        return self._pem


class GnuTLSStyleCredentials:
    """``.cert``, ``.key``, ``.trusted`` and ``.verify_peer``, as a client's ``account.tls_credentials``."""

    def __init__(self, cert_pem, key_pem, trusted=(), verify_peer=False):
        self.cert = Exported(cert_pem)
        self.key = Exported(key_pem)
        self.trusted = [Exported(pem) for pem in trusted]
        self.verify_peer = verify_peer


def supported():
    """True when msrplib.tls builds server and client contexts from GnuTLS-style credentials."""
    from msrplib import tls
    own = tls.TLSCredentials.ephemeral()
    credentials = GnuTLSStyleCredentials(own.cert_pem.decode('ascii'), own.key_pem.decode('ascii'))
    try:
        tls.server_context(credentials)
        tls.client_context(credentials)
    except TypeError:
        return False
    return True
