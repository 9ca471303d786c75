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
from types import MappingProxyType
import time

import gevent
import gevent.ssl
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
from msrplib.websocket import MSRPWebSocketError

__all__ = [
    'MSRPTimeout', 'MSRPConnectTimeout', 'MSRPIncomingConnectTimeout', 'MSRPBindSessionTimeout',
    'MSRPConnectError', 'MSRPCertificateError', 'MSRPBindError',
    'ConnectBase', 'ConnectorDirect', 'AcceptorDirect', 'DirectConnector', 'DirectAcceptor', 'MSRPServer',
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
    failure), :class:`MSRPCertificateError` (the peer's certificate does
    not verify), :class:`~msrplib.tls.MSRPCredentialsError` (unusable
    GnuTLS-style ``credentials``) or
    :class:`~msrplib.websocket.MSRPWebSocketError` for a ``;ws`` URI (a
    WebSocket endpoint is reached only through its relay, RFC 7977).
    """
    if uri.transport.lower() == 'ws':
        raise MSRPWebSocketError('%s is a WebSocket endpoint: it is reached only through its relay (RFC 7977); '
                                 'use a relay (MSRPRelaySettings with ws_url for a WebSocket relay)' % (uri,))
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
                    if expected_fingerprint is None and not tls.verifies_peer(credentials) and logger:
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


class ConnectBase:
    """The base class of the connectors and acceptors (direct and relay), as in the classic API.

    ``ConnectBase(logger=None, use_sessmatch=False)``.  Subclasses implement
    :meth:`prepare`, :meth:`complete` and :meth:`cleanup` (see the module
    docstring); ``isinstance(x, ConnectBase)`` tells a connector or acceptor.
    """

    def __init__(self, logger=None, use_sessmatch=False):
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch

    def prepare(self, local_uri=None):
        """Get ready for :meth:`complete`; return the full local path (a list of URI)."""
        raise NotImplementedError

    def complete(self, full_remote_path):
        """Connect and bind; return the bound :class:`~msrplib.transport.MSRPTransport`."""
        raise NotImplementedError

    def cleanup(self, sync=True):
        """Release what :meth:`prepare` took when :meth:`complete` is not called or failed."""
        raise NotImplementedError


@implementer(IConnector)
class ConnectorDirect(ConnectBase):
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
        :class:`MSRPCertificateError`, :class:`~msrplib.tls.MSRPCredentialsError`
        (unusable GnuTLS-style ``local_uri.credentials``),
        :class:`MSRPBindSessionTimeout`, or
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


def _server_side(sock, context):
    # The server side of a TLS connection over ``sock``, its handshake not done yet: the caller does it under
    # its own timeout and closes the returned socket if it fails (``sock`` itself is detached by then).
    if isinstance(context, gevent.ssl.SSLContext):
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    return gevent.ssl.SSLSocket(sock=sock, server_side=True, do_handshake_on_connect=False, _context=context)


@implementer(IConnector)
class AcceptorDirect(ConnectBase):
    """Answering side without relay: listens in :meth:`prepare`, accepts its peer in :meth:`complete`.

    ``AcceptorDirect(logger=None, use_sessmatch=False)``.  For msrps, the
    certificate is ``local_uri.credentials`` (an ``ssl.SSLContext``, a
    :class:`msrplib.tls.TLSCredentials` or GnuTLS-style credentials, see
    doc/tls.md); without one, a self-signed certificate is made and its SDP
    fingerprint is in :attr:`fingerprint`.

    While :meth:`complete` waits, every incoming connection is accepted and
    bound in a greenlet of its own (TLS handshake, binding SEND), so a
    connection that stays silent, closes, or binds to another session (it
    gets 481) cannot keep the expected peer out: it is dropped and the wait
    goes on.  At most :attr:`max_pending_bindings` connections bind at once
    (the oldest is dropped for a new one, after those binding have read what
    already arrived: a burst queued behind a peer that sent its binding does
    not drop it).  The listening socket is closed
    when :meth:`complete` returns or fails, unless :attr:`keep_listening` is
    set: then each call of :meth:`complete` returns the next bound peer, and
    :meth:`cleanup` closes it.
    """

    #: Connections binding at the same time at most; a new one beyond it drops the oldest.
    max_pending_bindings = 32
    #: Leave the listening socket open after complete() (for several peers, one complete() each).
    keep_listening = False
    #: Called as ``on_connection_dropped((host, port), error)`` for each incoming connection dropped
    #: while :meth:`complete` waits (silent, closed, TLS failure, wrong session, dropped for
    #: max_pending_bindings); None: logged at info level.
    on_connection_dropped = None

    def __init__(self, logger=None, use_sessmatch=False):
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch
        self.local_uri = None
        self.listener = None
        self.fingerprint = None
        self._context = None
        self._accepter = None
        self._binding = {}          # greenlet -> (accepted socket, address), oldest first: connections binding
        self._bound = []            # transports bound and not yet returned by complete()
        self._failure = None        # why the latest connection was dropped
        self._changed = Event()     # set when a connection bound or was dropped, or cleanup() ran

    def prepare(self, local_uri=None):
        """Start listening on ``local_uri`` (port None/0: any free port, written back); return ``[local_uri]``.

        Raises :class:`MSRPBindError` when the port cannot be opened,
        :class:`~msrplib.tls.MSRPCredentialsError` for unusable GnuTLS-style
        ``local_uri.credentials``.
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
        """Wait for the peer of ``full_remote_path`` to connect and bind; return the bound :class:`MSRPTransport`.

        ``full_remote_path=None`` takes any peer that addresses this endpoint.
        Connections are accepted until :attr:`MSRPIncomingConnectTimeout.seconds`
        (None: no limit) have passed; each one has
        :attr:`MSRPBindSessionTimeout.seconds` to bind (its TLS handshake
        also within ``MSRPConnectTimeout.seconds``).  One that fails is
        dropped and the wait goes on.  When no more connections are taken and
        none is still binding, raises why the latest one failed --
        :class:`MSRPBindSessionTimeout` (it did not bind in time),
        :class:`MSRPIncomingConnectTimeout` (its TLS handshake did not
        finish), :class:`MSRPConnectError` (its TLS handshake failed),
        :class:`~msrplib.tls.MSRPCertificateError` (credentials with
        ``verify_peer`` and its certificate missing or not verifying),
        :class:`~msrplib.transport.MSRPNoSuchSessionError` /
        :class:`~msrplib.transport.MSRPBadRequest` (its binding's paths did
        not match; it got the same error) or ``ConnectionClosed`` -- or
        :class:`MSRPIncomingConnectTimeout` when no connection came at all.
        Raises :class:`MSRPConnectError` when :meth:`cleanup` is called
        meanwhile, :class:`MSRPError` if :meth:`prepare` was not called.
        """
        if self.listener is None:
            raise MSRPError('prepare() was not called')
        seconds = MSRPIncomingConnectTimeout.seconds
        deadline = None if seconds is None else time.monotonic() + seconds
        self._failure = None
        accepting = True
        self._accepter = gevent.spawn(self._accept_loop, self.listener, full_remote_path)
        try:
            while True:
                self._changed.clear()
                if self._bound:
                    return self._bound.pop(0)
                if self.listener is None:
                    raise MSRPConnectError(self.local_uri.host, self.local_uri.port, 'accept() failed: the '
                                                                                      'acceptor was cleaned up')
                remaining = None if deadline is None else deadline - time.monotonic()
                if accepting and remaining is not None and remaining <= 0:
                    accepting = False
                    self._stop_accepting()
                if not accepting:
                    if not self._binding:
                        raise self._failure or MSRPIncomingConnectTimeout()
                    remaining = None   # each connection still binding ends within its own bound
                self._changed.wait(remaining)
        finally:
            self._stop_accepting()
            if not self.keep_listening:
                self.cleanup()

    def _stop_accepting(self):
        accepter, self._accepter = self._accepter, None
        if accepter is not None and accepter is not gevent.getcurrent():
            accepter.kill()

    def _accept_loop(self, listener, full_remote_path):
        while True:
            try:
                sock, address = listener.accept()
            except OSError as e:
                if self.listener is not listener:
                    return          # cleanup() closed it
                self.logger.warning('accept() failed: %s' % (e,))
                gevent.sleep(0.1)   # e.g. out of file descriptors: let connections finish
                continue
            job = gevent.spawn(self._bind_connection, sock, address, full_remote_path)
            self._binding[job] = sock, address
            limit = max(1, self.max_pending_bindings)
            if len(self._binding) > limit:
                # accept() does not wait while connections are queued, so a burst is taken at once: let the
                # connections binding (this one too) read what they already received -- a binding SEND, or
                # the end of one that closed -- before the oldest is dropped; else the expected peer, queued
                # in front of a burst, is dropped unread
                gevent.sleep(0)
            while len(self._binding) > limit:
                dropped = self._abandon(next(iter(self._binding)))
                self._dropped(dropped, MSRPConnectError(
                    self.local_uri.host, self.local_uri.port, 'dropped unbound for a newer connection: %d '
                    'connections were binding at once (max_pending_bindings)' % limit))

    def _abandon(self, job):
        # Stop a connection's binding; its socket is closed here too, in case its greenlet never ran.  Returns
        # the connection's address.
        sock, address = self._binding.pop(job, (None, None))
        job.kill(block=False)
        _close_quietly(sock)
        return address

    def _dropped(self, address, error):
        # Tell why an incoming connection was dropped (on_connection_dropped, else the log).
        self._failure = error
        if self.on_connection_dropped is not None:
            try:
                self.on_connection_dropped(address[:2], error)
            except Exception:  # the application's callback must not stop the acceptor
                self.logger.exception('on_connection_dropped raised')
        else:
            self.logger.info('Incoming connection from %s:%s dropped: %s' % (address[0], address[1],
                                                                              error or type(error).__name__))

    def _bind_connection(self, sock, address, full_remote_path):
        transport = None
        try:
            _tune(sock)
            if self._context is not None:
                # the handshake has a bound of its own: waiting for a peer without a time limit
                # (MSRPIncomingConnectTimeout.seconds = None) must not keep a stalled handshake forever
                seconds = MSRPConnectTimeout.seconds
                stalled = MSRPIncomingConnectTimeout('TLS handshake not completed within %s seconds' % seconds)
                sock = _server_side(sock, self._context)
                try:
                    with gevent.Timeout(seconds, stalled):
                        sock.do_handshake()
                except (OSError, ValueError) as e:
                    # a client certificate refused (local_uri.credentials with verify_peer)
                    raise tls.certificate_failure(e, 'the connecting peer') or MSRPConnectError(
                        self.local_uri.host, self.local_uri.port, 'TLS handshake: %s' % e)
            with MSRPBindSessionTimeout.timeout():
                transport = MSRPTransport(self.local_uri, self.logger, self.use_sessmatch, sock=sock)
                transport.accept_binding(full_remote_path)
        except (MSRPError, ConnectionClosed, OSError, ValueError) as e:
            self._dropped(address, e.with_traceback(None))
            self._drop(transport, sock)
        except BaseException:   # killed: cleanup(), complete() returned, or dropped for a newer connection
            self._drop(transport, sock)
            raise
        else:
            self._bound.append(transport)
        finally:
            self._binding.pop(gevent.getcurrent(), None)
            self._changed.set()

    @staticmethod
    def _drop(transport, sock):
        if transport is not None:
            transport.loseConnection()
        else:
            _close_quietly(sock)

    def cleanup(self, sync=True):
        """Stop listening (if still listening) and drop connections not returned by :meth:`complete`."""
        self._stop_accepting()
        for job in list(self._binding):
            self._abandon(job)
        bound, self._bound = self._bound, []
        for transport in bound:
            transport.loseConnection()
        if self.listener is not None:
            _close_quietly(self.listener)
            self.listener = None
        self._changed.set()


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

    @property
    def ports(self):
        """The listening sockets, as in the classic API: ``{interface: {port: (use_tls, socket)}}``.

        A read-only snapshot (mappings that cannot be changed) taken at each
        access; ``socket`` is the listening gevent socket.
        """
        ports = {}
        for (host, port), listener in self.listeners.items():
            if listener.socket is not None:
                ports.setdefault(host, {})[port] = (listener.use_tls, listener.socket)
        return MappingProxyType({host: MappingProxyType(by_port) for host, by_port in ports.items()})

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
