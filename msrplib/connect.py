"""Establishing MSRP connections: connectors, acceptors and MSRPServer.

A connector or acceptor is used once, in three steps that frame the SDP
offer/answer exchange::

    full_local_path = connector.prepare()      # e.g. start listening, or reserve at a relay
    try:
        ...put full_local_path in SDP a=path, get the peer's a=path...
        transport = connector.complete(full_remote_path)   # connect and bind
    finally:
        connector.cleanup()

``prepare(local_uri=None)`` returns the full local path (a list of
:class:`~msrplib.protocol.URI`) and may update ``local_uri`` in place (a port
of 0 becomes the real port).  ``complete(full_remote_path)`` returns a bound
:class:`~msrplib.transport.MSRPTransport`.  ``cleanup()`` releases what
``prepare()`` took if ``complete()`` is never called or fails.

Which one: :class:`ConnectorDirect` (calling side, no relay),
:class:`AcceptorDirect` (answering side, no relay), and their relay
counterparts; :func:`get_connector` and :func:`get_acceptor` choose.
:class:`MSRPServer` shares one listening socket between many sessions.

Every wait is bounded by a timeout class whose ``seconds`` class attribute
can be changed: :class:`MSRPConnectTimeout`, :class:`MSRPIncomingConnectTimeout`,
:class:`MSRPBindSessionTimeout` (and, for relays, ``MSRPRelayConnectTimeout``
and ``MSRPAuthTimeout``).
"""

import ssl

import gevent
from gevent import socket
from gevent.event import AsyncResult, Event

from zope.interface import implementer

from msrplib import MSRPError
from msrplib import tls
from msrplib.protocol import URI
from msrplib.transport import (
    MSRPTransport, MSRPTransactionError, ConnectionClosed, ChunkParseError)
from msrplib.interfaces import IConnector, IMSRPServer
from msrplib.trafficlog import Logger

__all__ = [
    'MSRPTimeout', 'MSRPConnectTimeout', 'MSRPIncomingConnectTimeout', 'MSRPBindSessionTimeout',
    'MSRPConnectError', 'MSRPCertificateError', 'MSRPBindError',
    'ConnectorDirect', 'AcceptorDirect', 'DirectConnector', 'DirectAcceptor', 'MSRPServer',
    'get_connector', 'get_acceptor',
    'MSRPRelaySettings', 'RelayConnection', 'ConnectorRelay', 'AcceptorRelay',
    'MSRPRelayAuthError', 'MSRPAuthTimeout', 'MSRPRelayConnectTimeout', 'MSRPRelayConnectError',
]

MSRPCertificateError = tls.MSRPCertificateError


class MSRPTimeout(MSRPError):
    """A wait of the connect layer ran out of time; ``seconds`` is the limit (class attribute)."""

    seconds = 30
    comment = 'Timed out'

    def __init__(self, *args):
        MSRPError.__init__(self, *(args or ('%s (%s seconds)' % (self.comment, self.seconds),)))

    @classmethod
    def timeout(cls, seconds=None):
        """A ``gevent.Timeout`` that raises this class after ``seconds`` (default: ``cls.seconds``).

        The exception it raises names the limit that ran out (``seconds``),
        also when that is not ``cls.seconds``.
        """
        if seconds is None:
            seconds = cls.seconds
        if seconds is None:
            return gevent.Timeout(None)  # no limit: nothing is ever raised
        error = cls('%s (%s seconds)' % (cls.comment, seconds))
        error.seconds = seconds
        return gevent.Timeout(seconds, error)


class MSRPConnectTimeout(MSRPTimeout):
    """Connecting to the peer (TCP and TLS handshake) took too long."""
    comment = 'Timed out while establishing the connection'


class MSRPIncomingConnectTimeout(MSRPTimeout):
    """No incoming connection arrived in time (or its TLS handshake did not complete)."""
    comment = 'Timed out while waiting for an incoming connection'


class MSRPBindSessionTimeout(MSRPTimeout):
    """The connection was not bound (empty SEND and its 200) in time."""
    comment = 'Timed out while waiting for the session to be bound'


class MSRPConnectError(MSRPError):
    """A connection could not be made or accepted: ``host``, ``port`` and the ``reason``."""

    def __init__(self, host, port, reason):
        self.host = host
        self.port = port
        self.reason = reason
        where = '[%s]:%s' % (host, port) if ':' in str(host) else '%s:%s' % (host, port)
        MSRPError.__init__(self, 'Cannot connect to %s: %s' % (where, reason))


class MSRPBindError(MSRPError):
    """A listening socket could not be opened (e.g. the port is in use)."""


def _close_quietly(sock):
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _listen(uri):
    """Open a listening socket for ``uri`` (port None/0: any) and write the real port into it."""
    listener = socket.socket(_family(uri.host), socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((uri.host, uri.port or 0))
        listener.listen(128)
    except OSError as e:
        _close_quietly(listener)
        raise MSRPBindError('Cannot listen on %s:%s: %s' % (uri.host, uri.port or 0, e))
    uri.port = listener.getsockname()[1]
    return listener


def _tune(sock):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def _family(host):
    return socket.AF_INET6 if ':' in host else socket.AF_INET


def bound_socket(uri):
    """A TCP socket bound to ``uri``'s host and port (port None/0: any, written back); None if that fails.

    The active side connects from it, so the port in its URI is the real
    source port of its connection -- which is how a relay (RFC 4976) finds
    the connection again when it forwards chunks back to this endpoint.
    """
    sock = socket.socket(_family(uri.host), socket.SOCK_STREAM)
    try:
        if uri.port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((uri.host, uri.port or 0))
    except (OSError, UnicodeError):
        _close_quietly(sock)
        return None
    uri.port = sock.getsockname()[1]
    return sock


def connect_to(uri, credentials=None, expected_fingerprint=None, logger=None, sock=None, context=None,
               server_hostname=None, timeout_class=None):
    """Open a connection to ``uri`` (TCP, and TLS for msrps), bounded by :class:`MSRPConnectTimeout`.

    ``sock``: an unconnected socket to connect from (see :func:`bound_socket`).
    ``context``: the ``ssl.SSLContext`` to use instead of one made from
    ``credentials``/``expected_fingerprint``; ``server_hostname``: the name
    its certificate is checked against (default: the URI's host).  Returns
    the connected gevent socket.  Raises :class:`MSRPConnectTimeout` (or
    ``timeout_class``), :class:`MSRPConnectError` (refused, unreachable, TLS
    failure) or :class:`MSRPCertificateError` (the peer's certificate does
    not verify).
    """
    port = uri.port or 2855
    with (timeout_class or MSRPConnectTimeout).timeout():
        try:
            if sock is None:
                sock = socket.create_connection((uri.host, port))
            else:
                sock.connect((uri.host, port))
            _tune(sock)
            if uri.use_tls:
                if context is None:
                    context = tls.client_context(credentials, expected_fingerprint)
                    if expected_fingerprint is None and not isinstance(credentials, ssl.SSLContext) and logger:
                        logger.warning('TLS peer %s is not authenticated (no fingerprint or CA given)' % (uri,))
                sock = tls.wrap_socket(sock, context, server_hostname=server_hostname or uri.host)
                tls.check_peer_certificate(sock, expected_fingerprint)
        except ssl.SSLCertVerificationError as e:
            _close_quietly(sock)
            raise MSRPCertificateError('Certificate of %s:%s does not verify: %s' % (uri.host, port, e.verify_message
                                                                                      or e))
        except (OSError, ValueError) as e:
            _close_quietly(sock)
            raise MSRPConnectError(uri.host, port, str(e) or type(e).__name__)
        except BaseException:
            _close_quietly(sock)
            raise
    return sock


@implementer(IConnector)
class ConnectorDirect:
    """Calling side without relay: connects to the peer in :meth:`complete` and binds.

    ``ConnectorDirect(logger=None, use_sessmatch=False, expected_fingerprint=None)``;
    ``expected_fingerprint`` (the peer's SDP a=fingerprint, also settable as
    an attribute before :meth:`complete`) authenticates an msrps peer.
    """

    def __init__(self, logger=None, use_sessmatch=False, expected_fingerprint=None):
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch
        self.expected_fingerprint = expected_fingerprint
        self.local_uri = None
        self.transport = None
        self._socket = None

    def prepare(self, local_uri=None):
        """Return ``[local_uri]`` (a new URI when None).

        The socket :meth:`complete` connects from is bound here, so a port of
        None or 0 becomes its real source port; when the URI's host cannot be
        bound (it is not an address of this machine), the port defaults to
        2855 and the kernel picks the source address.
        """
        if local_uri is None:
            local_uri = URI(use_tls=False)
        self.cleanup()
        self._socket = bound_socket(local_uri)
        if local_uri.port is None:
            local_uri.port = 2855
        self.local_uri = local_uri
        return [local_uri]

    def getLocalPath(self):
        """The full local path, as :meth:`prepare` returned it."""
        return [self.local_uri]

    def complete(self, full_remote_path):
        """Connect to the first hop of ``full_remote_path``, bind, and return the :class:`MSRPTransport`.

        Raises :class:`MSRPConnectTimeout`, :class:`MSRPConnectError`,
        :class:`MSRPCertificateError`, :class:`MSRPBindSessionTimeout`, or
        :class:`~msrplib.transport.MSRPTransactionError` when the peer refuses
        the binding.
        """
        if self.local_uri is None:
            self.prepare()
        transport = MSRPTransport(self.local_uri, self.logger, self.use_sessmatch)
        transport.set_full_remote_path(full_remote_path)
        next_host = transport.next_host()
        sock, self._socket = self._socket, None
        if sock is not None and sock.family != _family(next_host.host):
            _close_quietly(sock)
            sock = None
        sock = connect_to(next_host, self.local_uri.credentials, self.expected_fingerprint, self.logger, sock=sock)
        transport.attach(sock)
        self.transport = transport
        _bind(transport, transport.bind, full_remote_path)
        self.transport = None
        return transport

    def cleanup(self, sync=True):
        """Close a connection left half-made by a failed :meth:`complete`, or the unused socket of :meth:`prepare`."""
        if self.transport is not None:
            self.transport.loseConnection()
            self.transport = None
        if self._socket is not None:
            _close_quietly(self._socket)
            self._socket = None


def _bind(transport, how, full_remote_path):
    try:
        with MSRPBindSessionTimeout.timeout():
            how(full_remote_path)
    except BaseException:
        transport.loseConnection()
        raise


@implementer(IConnector)
class AcceptorDirect:
    """Answering side without relay: listens in :meth:`prepare`, accepts one connection in :meth:`complete`.

    ``AcceptorDirect(logger=None, use_sessmatch=False)``.  For msrps, the
    certificate is ``local_uri.credentials`` (an ``ssl.SSLContext`` or
    :class:`msrplib.tls.TLSCredentials`); without one, a self-signed
    certificate is made and its SDP fingerprint is in :attr:`fingerprint`.
    The listening socket is closed once one connection is taken.
    """

    def __init__(self, logger=None, use_sessmatch=False):
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch
        self.local_uri = None
        self.listener = None
        self.fingerprint = None
        self._context = None

    def prepare(self, local_uri=None):
        """Start listening on ``local_uri`` (port None/0: any free port, written back); return ``[local_uri]``.

        Raises :class:`MSRPBindError` when the port cannot be opened.
        """
        if local_uri is None:
            local_uri = URI(use_tls=False)
        self.cleanup()
        if local_uri.use_tls:
            self._context, self.fingerprint = tls.server_context(local_uri.credentials)
        self.listener = _listen(local_uri)
        self.local_uri = local_uri
        return [local_uri]

    def getLocalPath(self):
        """The full local path, as :meth:`prepare` returned it."""
        return [self.local_uri]

    def complete(self, full_remote_path):
        """Accept the peer's connection and its binding; return the bound :class:`MSRPTransport`.

        Raises :class:`MSRPIncomingConnectTimeout`, :class:`MSRPBindSessionTimeout`,
        :class:`MSRPConnectError` (TLS handshake failed), or the error sent
        to the peer when its paths do not match.
        """
        if self.listener is None:
            raise MSRPError('prepare() was not called')
        try:
            with MSRPIncomingConnectTimeout.timeout():
                try:
                    sock, _ = self.listener.accept()
                except OSError as e:  # e.g. cleanup() called meanwhile by another greenlet
                    raise MSRPConnectError(self.local_uri.host, self.local_uri.port, 'accept() failed: %s' % (e,))
                _tune(sock)
                if self._context is not None:
                    # the handshake has its own bound too, so that waiting for a peer with no time limit
                    # (seconds = None) cannot be held up by a peer that never completes it
                    with MSRPIncomingConnectTimeout.timeout(MSRPConnectTimeout.seconds):
                        try:
                            sock = tls.wrap_socket(sock, self._context, server_side=True)
                        except (OSError, ValueError) as e:
                            _close_quietly(sock)
                            raise MSRPConnectError(self.local_uri.host, self.local_uri.port,
                                                   'TLS handshake: %s' % e)
                        except BaseException:  # the timeout: do not leave the half-made connection open
                            _close_quietly(sock)
                            raise
        finally:
            self.cleanup()
        transport = MSRPTransport(self.local_uri, self.logger, self.use_sessmatch, sock=sock)
        _bind(transport, transport.accept_binding, full_remote_path)
        return transport

    def cleanup(self, sync=True):
        """Stop listening (if still listening)."""
        if self.listener is not None:
            _close_quietly(self.listener)
            self.listener = None


DirectConnector = ConnectorDirect
DirectAcceptor = AcceptorDirect


class _Listener:
    # One listening socket of MSRPServer and the greenlet accepting on it.
    def __init__(self, server, uri, context):
        self.use_tls = uri.use_tls
        self.context = context
        self.socket = _listen(uri)
        self.greenlet = gevent.spawn(self._accept_loop, server)

    def _accept_loop(self, server):
        while True:
            try:
                sock, address = self.socket.accept()
            except OSError as e:
                if self.socket is None or self.socket.fileno() < 0:
                    return
                server.logger.warning('accept() failed: %s' % (e,))
                gevent.sleep(0.1)  # e.g. out of file descriptors: let connections finish
                continue
            gevent.spawn(server._handle_connection, sock, address, self)

    def stop(self):
        sock, self.socket = self.socket, None
        # Wait for the accept loop to end: while a greenlet waits in accept(), gevent defers
        # closing the descriptor, and the port would stay taken for a moment (EADDRINUSE).
        self.greenlet.kill(block=self.greenlet is not gevent.getcurrent())
        _close_quietly(sock)


class _Rendezvous:
    # Where an incoming binding (offered by the connection handler) meets complete().
    def __init__(self):
        self.offer = AsyncResult()     # (transport, binding chunk, local URI, logger)
        self.claimed = Event()


@implementer(IMSRPServer)
class MSRPServer:
    """Shares listening sockets between many sessions and routes each incoming connection by its binding.

    ``prepare(local_uri=None, logger=None)`` listens on the URI's host/port
    unless a socket already listens there (sharing it) and registers the
    URI; ``complete(full_remote_path)`` waits (up to
    :attr:`MSRPBindSessionTimeout.seconds`) for the connection whose binding
    SEND comes from ``full_remote_path`` to a prepared URI, checks its paths
    and returns it bound; ``cleanup(local_uri)`` forgets a URI.  A binding
    SEND for an unknown To-Path is answered with 481 and its connection
    closed; so is a connection that nobody completes in time.  For msrps the
    certificate is ``local_uri.credentials`` or a self-signed one whose SDP
    fingerprint is :attr:`fingerprint`.
    """

    def __init__(self, logger=None, use_sessmatch=False):
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch
        self.listeners = {}      # (host, port) -> _Listener
        self.expected = {}       # local session-id -> (local URI, logger)
        self.fingerprint = None
        self._credentials = None
        self._rendezvous = {}    # remote session-id -> _Rendezvous

    def _context_for(self, local_uri):
        if local_uri.credentials is not None:
            return tls.server_context(local_uri.credentials)
        if self._credentials is None:
            self._credentials = tls.TLSCredentials.ephemeral()
        return self._credentials.server_context(), self._credentials.fingerprint

    def prepare(self, local_uri=None, logger=None):
        """Listen for ``local_uri`` (sharing an existing socket on its host/port) and expect it.

        Returns ``[local_uri]`` with the real port written into it.  Raises
        :class:`MSRPBindError` when the port cannot be opened.
        """
        if local_uri is None:
            local_uri = URI(use_tls=False)
        key = (local_uri.host, local_uri.port)
        listener = self.listeners.get(key) if local_uri.port else None
        if listener is not None and listener.use_tls != local_uri.use_tls:
            listener.stop()
            del self.listeners[key]
            listener = None
        if listener is None:
            context = None
            if local_uri.use_tls:
                context, self.fingerprint = self._context_for(local_uri)
            listener = _Listener(self, local_uri, context)
            self.listeners[(local_uri.host, local_uri.port)] = listener
        self.expected[local_uri.session_id] = (local_uri, logger or self.logger)
        return [local_uri]

    def complete(self, full_remote_path):
        """Wait for the connection binding from ``full_remote_path``; return the bound :class:`MSRPTransport`.

        Raises :class:`MSRPBindSessionTimeout`, or the error sent to the peer
        when the binding's paths do not match
        (:class:`~msrplib.transport.MSRPNoSuchSessionError`).
        """
        full_remote_path = list(full_remote_path)
        key = full_remote_path[-1].session_id
        rendezvous = self._rendezvous.setdefault(key, _Rendezvous())
        try:
            with MSRPBindSessionTimeout.timeout():
                transport, chunk, local_uri, logger = rendezvous.offer.get()
        finally:
            if self._rendezvous.get(key) is rendezvous:
                del self._rendezvous[key]
        rendezvous.claimed.set()
        transport.local_uri = local_uri
        transport.logger = logger
        transport.set_full_remote_path(full_remote_path)
        try:
            transport.complete_binding(chunk)
        except BaseException:
            transport.loseConnection()
            raise
        return transport

    def cleanup(self, local_uri=None):
        """Stop expecting ``local_uri`` (every prepared URI when None)."""
        if local_uri is None:
            self.expected.clear()
        else:
            self.expected.pop(local_uri.session_id, None)

    def stopListening(self):
        """Close every listening socket (connections already made go on)."""
        for listener in self.listeners.values():
            listener.stop()
        self.listeners.clear()

    def close(self):
        """Stop listening and forget every prepared URI."""
        self.stopListening()
        self.cleanup()

    # -- incoming connections

    def _handle_connection(self, sock, address, listener):
        transport = rendezvous = None
        try:
            with MSRPBindSessionTimeout.timeout():
                _tune(sock)
                if listener.context is not None:
                    sock = tls.wrap_socket(sock, listener.context, server_side=True)
                host, port = sock.getsockname()[:2]
                transport = MSRPTransport(URI(host=host, port=port, session_id='', use_tls=listener.use_tls),
                                          self.logger, sock=sock)
                chunk = transport.read_chunk()
                if chunk is None:
                    return
                rendezvous = self._offer(transport, chunk)
                if rendezvous.claimed.wait():
                    return
        except (MSRPBindSessionTimeout, ConnectionClosed, ChunkParseError, MSRPTransactionError, OSError,
                ValueError) as e:
            self.logger.info('Incoming connection from %s:%s dropped: %s' % (address[0], address[1], e))
            if rendezvous is not None:
                self._withdraw(rendezvous)
            if transport is not None:
                transport.loseConnection()
            else:
                _close_quietly(sock)

    def _withdraw(self, rendezvous):
        for key, value in list(self._rendezvous.items()):
            if value is rendezvous:
                del self._rendezvous[key]

    def _offer(self, transport, chunk):
        # Hand a binding SEND to complete(); answers and raises when it cannot be routed.
        if chunk.method != 'SEND':
            transport.write_response(chunk, 481 if chunk.method is not None else 400, 'Session not bound')
            raise MSRPTransactionError('first chunk is not a binding SEND', 400)
        try:
            to_path, from_path = chunk.to_path, chunk.from_path
        except MSRPError:
            to_path = from_path = None
        if not to_path or not from_path:
            transport.write_response(chunk, 400, 'To-Path and From-Path are required')
            raise MSRPTransactionError('binding SEND without paths', 400)
        expected = self.expected.get(to_path[-1].session_id)
        if expected is None:
            transport.write_response(chunk, 481, 'No such session')
            raise MSRPTransactionError('binding SEND for an unknown session', 481)
        key = from_path[-1].session_id
        rendezvous = self._rendezvous.setdefault(key, _Rendezvous())
        if rendezvous.offer.ready():
            transport.write_response(chunk, 506, 'Session already bound')
            raise MSRPTransactionError('second binding for one session', 506)
        local_uri, logger = expected
        transport.use_sessmatch = self.use_sessmatch
        rendezvous.offer.set((transport, chunk, local_uri, logger))
        return rendezvous


def get_connector(relay=None, logger=None, use_sessmatch=False):
    """Return a connector for the calling side: :class:`ConnectorDirect`, or ``ConnectorRelay`` when ``relay``
    (an ``MSRPRelaySettings``) is given."""
    if relay is None:
        return ConnectorDirect(logger=logger, use_sessmatch=use_sessmatch)
    from msrplib.relay import ConnectorRelay
    return ConnectorRelay(relay, logger=logger, use_sessmatch=use_sessmatch)


def get_acceptor(relay=None, logger=None, use_sessmatch=False):
    """Return an acceptor for the answering side: :class:`AcceptorDirect`, or ``AcceptorRelay`` when ``relay``
    (an ``MSRPRelaySettings``) is given."""
    if relay is None:
        return AcceptorDirect(logger=logger, use_sessmatch=use_sessmatch)
    from msrplib.relay import AcceptorRelay
    return AcceptorRelay(relay, logger=logger, use_sessmatch=use_sessmatch)


_RELAY_NAMES = frozenset(['MSRPRelaySettings', 'RelayConnection', 'ConnectorRelay', 'AcceptorRelay',
                          'MSRPRelayAuthError', 'MSRPAuthTimeout', 'MSRPRelayConnectTimeout',
                          'MSRPRelayConnectError'])


def __getattr__(name):
    # The relay classes live in msrplib.relay (which imports this module); they are reachable here too.
    if name in _RELAY_NAMES:
        from msrplib import relay
        return getattr(relay, name)
    raise AttributeError('module %r has no attribute %r' % (__name__, name))
