"""MSRP relays (RFC 4976): reserving a session at a relay and connecting through it.

An endpoint behind NAT reserves a session at its relay with AUTH (HTTP
Digest, :mod:`msrplib.digest`): the relay answers with a ``Use-Path``, the
relay URI that now leads to this endpoint.  The endpoint advertises
``Use-Path + [own URI]`` in SDP and sends every chunk over its connection to
the relay; its To-Path is ``Use-Path + peer's path``.

:class:`ConnectorRelay` (calling side, binds actively) and
:class:`AcceptorRelay` (answering side, waits for the peer's binding) have
the connector interface of :mod:`msrplib.connect`; ``RelayConnection(relay,
mode)`` is the classic spelling of both.  The classes are importable from
:mod:`msrplib.connect` too.
"""

import ssl
import time

import gevent
from gevent import ssl as gevent_ssl
from gevent.event import AsyncResult

from zope.interface import implementer

from msrplib import MSRPError, digest, tls, websocket
from msrplib.connect import (
    ConnectBase, MSRPTimeout, MSRPConnectTimeout, MSRPConnectError, connect_to, _bind, _close_quietly)
from msrplib.protocol import (
    URI, ConnectInfo, MSRPData, ToPathHeader, FromPathHeader, ExpiresHeader, AuthorizationHeader,
    HeaderParsingError, random_transaction_id)
from msrplib.interfaces import IConnector
from msrplib.trafficlog import Logger
from msrplib.transport import MSRPTransport, MSRPTransactionError
from msrplib.wsconnect import connect_websocket

__all__ = [
    'MSRPRelaySettings', 'RelayConnection', 'ConnectorRelay', 'AcceptorRelay', 'resolve_relay',
    'MSRPRelayAuthError', 'MSRPAuthTimeout', 'MSRPRelayConnectTimeout', 'MSRPRelayConnectError',
]

DEFAULT_RELAY_PORT = 2855


class MSRPRelayAuthError(MSRPTransactionError):
    """The relay refused the reservation: ``code`` and ``comment`` are the relay's answer
    (401 for wrong credentials, 403, 423 that could not be satisfied...)."""

    def __init__(self, comment=None, code=None, relay=None):
        self.relay = relay
        MSRPTransactionError.__init__(self, comment, code)

    def __str__(self):
        what = MSRPTransactionError.__str__(self)
        return 'Relay %s refused AUTH: %s' % (self.relay, what) if self.relay else what


class MSRPAuthTimeout(MSRPTimeout):
    """The relay did not answer AUTH in time (code 408)."""
    comment = 'Timed out while waiting for the relay to answer AUTH'
    code = 408


class MSRPRelayConnectTimeout(MSRPConnectTimeout):
    """Connecting to the relay took too long."""
    comment = 'Timed out while connecting to the relay'


class MSRPRelayConnectError(MSRPConnectError):
    """No connection could be made to the relay (every address tried is in ``errors``)."""

    def __init__(self, relay, errors):
        self.relay = relay
        self.errors = errors
        host, port = (errors[-1].host, errors[-1].port) if errors else (relay, DEFAULT_RELAY_PORT)
        reason = '; '.join(str(error) for error in errors) or 'no address found'
        MSRPError.__init__(self, 'Cannot connect to relay %s: %s' % (relay, reason))
        self.host, self.port, self.reason = host, port, reason


class MSRPRelaySettings(ConnectInfo):
    """Where and how to reach a relay, and the credentials for it.

    ``MSRPRelaySettings(domain, username, password, host=None, port=None,
    use_tls=None, credentials=None, expires=None)``.  Without ``host`` the
    relay is found by DNS SRV (``_msrps._tcp.<domain>`` or
    ``_msrp._tcp.<domain>``), else at ``<domain>:2855``.  ``use_tls``
    defaults to True; the relay's certificate is checked against ``domain``
    with ``credentials`` (an ``ssl.SSLContext``, or GnuTLS-style credentials
    whose ``trusted`` CAs are trusted besides the system's and whose
    ``verify_peer`` says whether to check at all) or the system's CAs.
    ``expires`` is the reservation lifetime to ask for (None: the relay's
    default).  ``chunk_size`` is the body size of the chunks of large
    messages sent through this relay (None: ``MSRPSession.RELAY_CHUNK_SIZE``,
    8 KiB, which Kamailio forwards; it refuses frames over ~11 KB).

    ``ws_url`` (``ws://host[:port][/path]`` or ``wss://...``): reach the
    relay over WebSocket (RFC 7977) at that URL instead of over MSRP's own
    TCP/TLS; ``host``, ``port`` and DNS SRV are then not used.  ``use_tls``
    follows the URL's scheme (True for wss; a contradicting ``use_tls``
    raises ``ValueError``, as does a bad URL); over wss the relay's
    certificate is checked against the URL's host with the same
    ``credentials`` rules.  This endpoint's URI then has the ``ws``
    transport and a random ``.invalid`` host (RFC 7977 §5.2), see
    :meth:`RelayConnection.prepare`.
    """

    def __init__(self, domain, username, password, host=None, port=None, use_tls=None, credentials=None,
                 expires=None, chunk_size=None, ws_url=None):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError('chunk_size must be positive (or None)')
        if ws_url is not None:
            secure = websocket.parse_ws_url(ws_url).secure
            if use_tls is not None and bool(use_tls) != secure:
                raise ValueError('use_tls=%r contradicts the WebSocket URL %r' % (use_tls, ws_url))
            use_tls = secure
        self.ws_url = ws_url
        self.chunk_size = chunk_size
        self.domain = domain
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.use_tls = True if use_tls is None else bool(use_tls)
        self.credentials = credentials
        self.expires = expires

    @property
    def is_websocket(self):
        """True when the relay is reached over WebSocket (``ws_url`` is set)."""
        return self.ws_url is not None

    @property
    def uri_domain(self):
        """The relay's URI built from its domain: ``msrp[s]://domain[:port];tcp`` (``;ws`` over WebSocket,
        with the URL's port)."""
        if self.ws_url is not None:
            return URI(host=self.domain, port=websocket.parse_ws_url(self.ws_url).port, use_tls=self.use_tls,
                       session_id='', transport='ws')
        return URI(host=self.domain, port=self.port, use_tls=self.use_tls, session_id='')

    def __str__(self):
        return '%s://%s@%s%s' % (self.scheme, self.username, self.domain,
                                 ':%s' % self.port if self.port else '')

    def __repr__(self):
        if self.ws_url is not None:
            return 'MSRPRelaySettings(%r, %r, ws_url=%r)' % (self.domain, self.username, self.ws_url)
        return 'MSRPRelaySettings(%r, %r, host=%r, port=%r, use_tls=%r)' % (
            self.domain, self.username, self.host, self.port, self.use_tls)


def resolve_relay(relay, lifetime=5.0):
    """Return the ``(host, port)`` pairs to try for ``relay``, best first.

    ``relay.host`` when given; otherwise the DNS SRV records of
    ``_msrps._tcp.<domain>`` (TLS) or ``_msrp._tcp.<domain>`` ordered by
    priority and weight (dnspython); otherwise ``(domain, 2855)``.
    """
    if relay.host:
        return [(relay.host, relay.port or DEFAULT_RELAY_PORT)]
    if relay.port:
        return [(relay.domain, relay.port)]
    try:
        import dns.exception
        import dns.resolver
        name = '_%s._tcp.%s' % ('msrps' if relay.use_tls else 'msrp', relay.domain)
        # dnspython blocks its thread: ask in gevent's thread pool so that other greenlets run meanwhile
        answers = gevent.get_hub().threadpool.apply(dns.resolver.resolve, (name, 'SRV'), {'lifetime': lifetime})
        records = sorted(answers, key=lambda record: (record.priority, -record.weight))
        found = [(str(record.target).rstrip('.'), record.port) for record in records if str(record.target) != '.']
        if found:
            return found
    except (ImportError, dns.exception.DNSException):
        pass
    return [(relay.domain, DEFAULT_RELAY_PORT)]


def _relay_context(relay):
    """The client context for the TLS connection to ``relay``.

    ``relay.credentials``: an SSLContext is used as is; GnuTLS-style
    credentials with ``verify_peer`` check the relay's certificate against
    their ``trusted`` CAs and the system's, and its name against the
    relay's domain (without ``verify_peer`` nothing is checked, as the
    classic library did); otherwise the system's CAs and the domain, with a
    :class:`~msrplib.tls.TLSCredentials` as client certificate. Raises
    :class:`~msrplib.tls.MSRPCredentialsError` for unusable GnuTLS-style
    credentials.
    """
    credentials = relay.credentials
    if isinstance(credentials, ssl.SSLContext):
        return credentials
    if tls.is_gnutls_style(credentials):
        return tls.from_gnutls(credentials).client_context(check_hostname=True, system_cas=True)
    context = gevent_ssl.create_default_context()
    if isinstance(credentials, tls.TLSCredentials):
        credentials.load_into(context)
    return context


@implementer(IConnector)
class RelayConnection(ConnectBase):
    """Connects through a relay: ``RelayConnection(relay, mode, logger=None, use_sessmatch=False)``.

    ``mode`` is ``'active'`` (the calling side: :meth:`complete` sends the
    binding SEND) or ``'passive'`` (the answering side: :meth:`complete`
    waits for the peer's binding).  ``relay`` is an :class:`MSRPRelaySettings`.

    :meth:`prepare` connects to the relay, reserves a session with AUTH and
    returns ``Use-Path + [local_uri]``; the reservation is refreshed with a
    new AUTH before it expires for as long as the connection lives.
    Class attribute ``REFRESH_FRACTION`` (2/3): how far into the
    reservation's lifetime the refresh is sent; ``CLOSED_CHECK_INTERVAL``
    (1 s): how soon after the connection closes the refreshing stops.
    """

    REFRESH_FRACTION = 2.0 / 3
    CLOSED_CHECK_INTERVAL = 1.0  # how often the refresh greenlet checks whether the connection closed

    def __init__(self, relay, mode, logger=None, use_sessmatch=False):
        if mode not in ('active', 'passive'):
            raise ValueError("mode must be 'active' or 'passive', not %r" % (mode,))
        self.relay = relay
        self.mode = mode
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch
        self.transport = None
        self.local_uri = None
        self.relay_uri = None
        self.use_path = None
        self.expires = None
        self.refreshes = 0
        self._requested_expires = relay.expires
        self._challenge = None
        self._nc = 0
        self._refresher = None

    # -- connecting and reserving

    def prepare(self, local_uri=None):
        """Connect to the relay, reserve a session, and return ``Use-Path + [local_uri]``.

        Raises :class:`MSRPRelayConnectTimeout`, :class:`MSRPRelayConnectError`,
        :class:`~msrplib.tls.MSRPCertificateError` (the relay's certificate
        does not verify), :class:`~msrplib.tls.MSRPCredentialsError` (unusable
        GnuTLS-style ``relay.credentials``), :class:`MSRPAuthTimeout` or
        :class:`MSRPRelayAuthError`; over WebSocket (``relay.ws_url``) also
        :class:`~msrplib.websocket.WebSocketHandshakeError` (the relay did
        not answer 101 with the ``msrp`` subprotocol).

        Over WebSocket the local URI gets the ``ws`` transport and, unless its
        host is already one, a random ``.invalid`` host (RFC 7977 §5.2): a new
        ``local_uri`` is ``msrp[s]://<random>.invalid:<local port>/<session>;ws``.
        """
        self.cleanup()
        sock = self._connect()
        try:
            host, port = sock.getsockname()[:2]
            if self.relay.ws_url is not None:
                # RFC 7977 §5.2: a WebSocket client cannot be reached but over its connection: a .invalid host
                host = websocket.invalid_host()
            if local_uri is None:
                local_uri = URI(host=host, port=port, use_tls=self.relay.use_tls)
            else:
                local_uri.use_tls = self.relay.use_tls
                if not local_uri.port:
                    local_uri.port = port
            if self.relay.ws_url is not None:
                local_uri.transport = 'ws'
                if not websocket.is_invalid_host(local_uri.host):
                    local_uri.host = host
            self.local_uri = local_uri
            self.transport = MSRPTransport(local_uri, self.logger, self.use_sessmatch, sock=sock)
        except BaseException:
            _close_quietly(sock)
            raise
        try:
            response = self._authenticate(self.transport, self.relay.expires, reading=True)
        except BaseException:
            self.cleanup()
            raise
        self.use_path = response.headers['Use-Path'].decoded
        self.transport.set_local_path(self.use_path)
        return self.transport.full_local_path

    def _connect(self):
        errors = []
        context = _relay_context(self.relay) if self.relay.use_tls else None
        if context is not None and context.verify_mode == ssl.CERT_NONE:
            self.logger.warning('TLS relay %s is not authenticated (its credentials do not verify it, '
                                'e.g. verify_peer false)' % (self.relay.domain,))
        if self.relay.ws_url is not None:
            return self._connect_websocket(context)
        for host, port in resolve_relay(self.relay):
            uri = URI(host=host, port=port, use_tls=self.relay.use_tls, session_id='')
            try:
                sock = connect_to(uri, context=context, server_hostname=self.relay.domain,
                                  timeout_class=MSRPRelayConnectTimeout, logger=self.logger)
            except MSRPConnectError as e:
                self.logger.info('Cannot connect to relay at %s:%s: %s' % (host, port, e.reason))
                errors.append(e)
                continue
            self.relay_uri = URI(host=self.relay.domain, port=port, use_tls=self.relay.use_tls, session_id='')
            return sock
        raise MSRPRelayConnectError(self.relay.domain, errors)

    def _connect_websocket(self, context):
        url = websocket.parse_ws_url(self.relay.ws_url)
        try:
            sock = connect_websocket(self.relay.ws_url, context=context, logger=self.logger,
                                     timeout_class=MSRPRelayConnectTimeout)
        except MSRPConnectError as e:
            self.logger.info('Cannot connect to relay at %s: %s' % (self.relay.ws_url, e.reason))
            raise MSRPRelayConnectError(self.relay.ws_url, [e])
        self.relay_uri = URI(host=self.relay.domain, port=url.port, use_tls=url.secure, session_id='', transport='ws')
        return sock

    def getLocalPath(self):
        """The full local path, as :meth:`prepare` returned it."""
        return self.transport.full_local_path if self.transport is not None else None

    def _make_auth(self, expires):
        chunk = MSRPData(random_transaction_id(), method='AUTH')
        chunk.add_header(ToPathHeader(decoded=[self.relay_uri]))
        chunk.add_header(FromPathHeader(decoded=[self.local_uri]))
        if self._challenge is not None:
            self._nc += 1
            authorization = digest.make_authorization(self._challenge, self.relay.username, self.relay.password,
                                                      'AUTH', str(self.relay_uri), nc=self._nc)
            chunk.add_header(AuthorizationHeader(str(authorization)))
            chunk.authorization = authorization
        else:
            chunk.authorization = None
        if expires is not None:
            chunk.add_header(ExpiresHeader(decoded=expires))
        return chunk

    def _authenticate(self, transport, expires, reading):
        """Run AUTH until the relay says 200 (answering 401 and 423); return that response.

        ``reading``: read the responses here (before a session reads the transport).
        """
        fresh = False  # True when the last AUTH answered a challenge the relay had just sent
        for _ in range(8):
            try:
                chunk = self._make_auth(expires)
            except digest.DigestError as e:
                raise MSRPRelayAuthError('Cannot answer the challenge: %s' % (e,), 401, self.relay.domain)
            response = self._transact(transport, chunk, reading)
            code = response.code
            if code == 200:
                self._check_success(response, chunk.authorization)
                self.expires = self._header_int(response, 'Expires')
                return response
            if code == 401:
                if fresh:
                    raise MSRPRelayAuthError(response.comment or 'Unauthorized', 401, self.relay.domain)
                try:
                    self._challenge = digest.parse_challenge(response.headers['WWW-Authenticate'].encoded)
                except (KeyError, digest.DigestError) as e:
                    raise MSRPRelayAuthError('Unusable challenge: %s' % (e,), 401, self.relay.domain)
                self._nc = 0
                fresh = True
                continue
            if code == 423:
                bounded = self._bounded_expires(response, expires)
                if bounded is None or bounded == expires:
                    raise MSRPRelayAuthError(response.comment or 'Interval Out Of Bounds', 423, self.relay.domain)
                self.logger.info('Relay wants Expires %s instead of %s' % (bounded, expires))
                expires = self._requested_expires = bounded
                fresh = False
                continue
            raise MSRPRelayAuthError(response.comment, code, self.relay.domain)
        raise MSRPRelayAuthError('Too many AUTH rounds', 500, self.relay.domain)

    @staticmethod
    def _header_int(response, name):
        return response.header_value(name)

    def _bounded_expires(self, response, expires):
        minimum = self._header_int(response, 'Min-Expires')
        maximum = self._header_int(response, 'Max-Expires')
        if minimum is not None and (expires is None or expires < minimum):
            return minimum
        if maximum is not None and (expires is None or expires > maximum):
            return maximum
        return None

    def _check_success(self, response, authorization):
        try:
            use_path = response.headers['Use-Path'].decoded
        except (KeyError, HeaderParsingError) as e:
            raise MSRPRelayAuthError('200 without a valid Use-Path (%s)' % (e,), 502, self.relay.domain)
        if not use_path:
            raise MSRPRelayAuthError('200 with an empty Use-Path', 502, self.relay.domain)
        info = response.headers.get('Authentication-Info')
        if info is not None and authorization is not None:
            try:
                valid = authorization.check_rspauth(info.encoded, self.relay.password)
            except digest.DigestError as e:
                raise MSRPRelayAuthError('Bad Authentication-Info: %s' % (e,), 502, self.relay.domain)
            if not valid:
                raise MSRPRelayAuthError('The relay failed to prove it knows the password (rspauth)', 502,
                                         self.relay.domain)

    def _transact(self, transport, chunk, reading):
        with MSRPAuthTimeout.timeout():
            if reading:
                transport.write_chunk(chunk)
                while True:
                    response = transport.read_chunk()
                    if response is None:
                        continue
                    if response.method is None and response.transaction_id == chunk.transaction_id:
                        return response
                    self.logger.debug('Ignoring %r while waiting for the AUTH response' % (response,))
            result = AsyncResult()
            transport.expect_response(chunk.transaction_id, result.set)
            try:
                transport.write_chunk(chunk)
                return result.get()
            finally:
                transport.forget_response(chunk.transaction_id)

    # -- binding and refreshing

    def complete(self, full_remote_path):
        """Bind through the relay (send the binding SEND, or wait for the peer's) and return the transport.

        Raises :class:`~msrplib.connect.MSRPBindSessionTimeout`, the error of
        a refused binding, or the closure exception.
        """
        if self.transport is None:
            raise MSRPError('prepare() was not called or failed')
        transport = self.transport
        how = transport.bind if self.mode == 'active' else transport.accept_binding
        try:
            _bind(transport, how, full_remote_path)
        except BaseException:
            self.transport = None
            raise
        self.transport = None
        transport.relay_chunk_size = self.relay.chunk_size  # send_large_message() chunks at this size (None: default)
        if self.expires:
            self._refresher = gevent.spawn(self._refresh_loop, transport)
        return transport

    def _refresh_loop(self, transport):
        while transport.connected:
            # wake up now and then: the loop must end soon after the connection closes, not when
            # the refresh is due (which may be most of an hour away)
            due = time.monotonic() + max(0.5, self.expires * self.REFRESH_FRACTION)
            while transport.connected and time.monotonic() < due:
                gevent.sleep(min(self.CLOSED_CHECK_INTERVAL, due - time.monotonic()))
            if not transport.connected:
                return
            try:
                response = self._authenticate(transport, self._requested_expires, reading=False)
            except (MSRPError, MSRPTransactionError) as e:
                self.logger.warning('Refreshing the relay reservation failed: %s' % (e,))
                if not transport.connected:
                    return
                gevent.sleep(1)
                continue
            except Exception as e:  # the connection went away under us
                self.logger.info('Relay reservation refresh stopped: %s' % (e,))
                return
            self.refreshes += 1
            new_path = response.headers['Use-Path'].decoded
            if new_path != self.use_path:
                self.logger.info('The relay gave a new Use-Path %s on refresh; the advertised %s stays in use'
                                 % (' '.join(map(str, new_path)), ' '.join(map(str, self.use_path))))

    def cleanup(self, sync=True):
        """Close the relay connection if :meth:`complete` was not reached."""
        if self.transport is not None:
            self.transport.loseConnection()
            self.transport = None


class ConnectorRelay(RelayConnection):
    """Calling side through a relay: ``ConnectorRelay(relay, logger=None, use_sessmatch=False)``."""

    def __init__(self, relay, logger=None, use_sessmatch=False):
        RelayConnection.__init__(self, relay, 'active', logger=logger, use_sessmatch=use_sessmatch)


class AcceptorRelay(RelayConnection):
    """Answering side through a relay: ``AcceptorRelay(relay, logger=None, use_sessmatch=False)``."""

    def __init__(self, relay, logger=None, use_sessmatch=False):
        RelayConnection.__init__(self, relay, 'passive', logger=logger, use_sessmatch=use_sessmatch)
