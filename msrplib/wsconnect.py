"""MSRP over WebSocket on gevent: a WebSocket that looks like the socket MSRPTransport uses.

:func:`connect_websocket` opens a ``ws://`` or ``wss://`` connection (TCP,
TLS as for ``msrps``, then the opening handshake asking for the ``msrp``
subprotocol) and returns a :class:`WebSocketSocket`: it has the methods of
a gevent socket that :class:`~msrplib.transport.MSRPTransport` calls
(``recv``, ``send``, ``sendall``, ``getsockname``, ``getpeername``,
``shutdown``, ``close``), so the parser, transport and session work over it
unchanged.  Each MSRP chunk written goes in one WebSocket message (RFC 7977
§4); the messages received are read back as one byte stream.  The protocol
logic is in :mod:`msrplib.websocket` (sans-I/O); this module does the I/O.
"""

import socket as _stdlib_socket

import gevent
from gevent import ssl as gevent_ssl
from gevent.lock import Semaphore

from msrplib.connect import MSRPConnectError, MSRPConnectTimeout, connect_to, _close_quietly
from msrplib.protocol import URI
from msrplib.websocket import (
    ChunkSplitter, MSRPWebSocketError, WebSocketClient, WebSocketHandshakeError, WebSocketServer, host_header,
    parse_ws_url)

__all__ = ['WebSocketSocket', 'connect_websocket', 'accept_websocket']

_READ_SIZE = 65536
_CLOSE_FRAME_TIMEOUT = 1.0  # seconds a close frame may take to go out when the connection is closed


class WebSocketSocket:
    """A connected WebSocket carrying MSRP, with the socket methods MSRPTransport uses.

    ``WebSocketSocket(sock, connection, pending=b'')``: ``sock`` is the
    connected gevent socket (plain or TLS), ``connection`` the open
    :class:`~msrplib.websocket.WebSocketConnection` (client or server side),
    ``pending`` MSRP bytes already received with the handshake.

    ``recv(size)`` returns the MSRP bytes of the messages received (b'' once
    the peer closed with a close frame); a peer that breaks the WebSocket
    protocol, sends a message over ``connection.max_message_size``, closes
    with an error code or ends the stream without a close frame (inside a
    frame or not) makes it raise :class:`~msrplib.websocket.WebSocketProtocolError` (a
    ``ConnectionError``: the transport reports
    :class:`~msrplib.transport.ConnectionLost`) after a close frame with the
    matching code was sent.  Pings are answered.  ``send(data)`` takes the
    MSRP stream, cuts it into chunks and writes each one as one message,
    blocking the calling greenlet; it returns ``len(data)``.
    """

    #: MSRPTransport must not ask for sends that do not wait (a message is written whole or not at all).
    can_send_without_waiting = False

    def __init__(self, sock, connection, pending=b''):
        self._sock = sock
        self.connection = connection
        self._splitter = ChunkSplitter()
        self._pending = pending        # MSRP bytes received and not yet returned by recv()
        self._write_lock = Semaphore()
        self._closed = False
        self._broken = False           # a write was cut short: the stream may end inside a frame

    def getsockopt(self, *args):
        """The underlying socket's option (``socket.getsockopt``)."""
        return self._sock.getsockopt(*args)

    # -- reading

    def recv(self, size):
        """Up to ``size`` bytes of the MSRP stream, b'' once the peer closed; raises OSError (see the class)."""
        while True:
            pending = self._pending
            if pending:
                if len(pending) <= size:
                    self._pending = b''
                    return pending
                self._pending = pending[size:]
                return pending[:size]
            connection = self.connection
            if connection.error is not None:
                raise connection.error
            if connection.closed or self._closed:
                return b''
            data = self._sock.recv(max(size, _READ_SIZE))
            payload, outgoing = connection.receive(data)
            if outgoing:
                self._write_control(outgoing)
            self._pending = payload
            if connection.error is not None and not payload:
                raise connection.error

    def _write_control(self, data):
        # pongs and close frames, between whole messages of the writer
        try:
            with self._write_lock:
                self._sock.sendall(data)
        except OSError:
            pass  # the reader reports the closure

    # -- writing

    def send(self, data, flags=0, timeout=None):
        """Write the whole chunks ``data`` completes, one WebSocket message each; return ``len(data)``.

        Raises OSError when the connection fails (or
        :class:`~msrplib.websocket.MSRPWebSocketError` once it is closed).
        """
        size = len(data)
        try:
            chunks = self._splitter.feed(data)
        except ValueError as e:
            raise MSRPWebSocketError(str(e))
        if chunks:
            connection = self.connection
            frames = [connection.send_message(chunk) for chunk in chunks]
            with self._write_lock:
                try:
                    self._sock.sendall(frames[0] if len(frames) == 1 else b''.join(frames))
                except BaseException:
                    self._broken = True  # (maybe) inside a frame: no close frame can follow
                    raise
        return size

    def send_raw(self, data):
        """Write ``data`` as is on the underlying socket, between whole messages (for tests and hand-made frames)."""
        with self._write_lock:
            self._sock.sendall(data)

    def sendall(self, data, flags=0):
        """The same as :meth:`send` (which always takes everything)."""
        self.send(data)

    # -- the rest of the socket interface

    def getsockname(self):
        """The local address of the underlying TCP connection."""
        return self._sock.getsockname()

    def getpeername(self):
        """The address of the WebSocket server (or client) at the other end."""
        return self._sock.getpeername()

    def fileno(self):
        """The file descriptor of the underlying socket."""
        return self._sock.fileno()

    def settimeout(self, timeout):
        """Set the timeout of the underlying socket."""
        self._sock.settimeout(timeout)

    def shutdown(self, how=_stdlib_socket.SHUT_RDWR):
        """Send a close frame (when no write is under way) and shut the underlying socket down."""
        self._send_close()
        try:
            self._sock.shutdown(how)
        except OSError:
            pass

    def _send_close(self):
        if self._closed:
            return
        self._closed = True
        frame = self.connection.close() if self.connection.error is None and not self._broken else b''
        if not frame or self._write_lock.locked() or gevent.getcurrent() is gevent.get_hub():
            return  # (a writer is inside a message, or we may not wait: the peer sees the end of the stream)
        with gevent.Timeout(_CLOSE_FRAME_TIMEOUT, False):
            try:
                with self._write_lock:
                    self._sock.sendall(frame)
            except OSError:
                pass

    def close(self):
        """Close the underlying socket (after a close frame, see :meth:`shutdown`)."""
        self._send_close()
        self._sock.close()

    def __repr__(self):
        return '<WebSocketSocket %r>' % (self._sock,)


def _handshake(sock, connection, request, timeout_class):
    # Send ``request`` (b'' on the server side) and read until the handshake is done; returns the MSRP
    # bytes that came with it.
    with timeout_class.timeout():
        if request:
            sock.sendall(request)
        while not connection.open:
            data = sock.recv(_READ_SIZE)
            payload, outgoing = connection.receive(data)
            if outgoing:
                sock.sendall(outgoing)
            if connection.error is not None:
                raise connection.error
            if connection.open:
                return payload
            if not data:
                raise WebSocketHandshakeError('Connection closed during the WebSocket handshake')
    return b''


def connect_websocket(url, context=None, server_hostname=None, logger=None, timeout_class=None,
                      max_message_size=None):
    """Connect to WebSocket URL ``url`` (``ws://`` or ``wss://``) asking for the ``msrp`` subprotocol.

    ``context``: the ``ssl.SSLContext`` for ``wss://`` (default: the
    system's CAs); ``server_hostname``: the name the certificate is checked
    against (default: the URL's host).  Connecting and the handshake are
    each bounded by :class:`~msrplib.connect.MSRPConnectTimeout` (or
    ``timeout_class``).  Returns a :class:`WebSocketSocket`.  Raises
    ``ValueError`` (a bad URL), :class:`~msrplib.connect.MSRPConnectError`,
    the timeout, :class:`~msrplib.tls.MSRPCertificateError` or
    :class:`~msrplib.websocket.WebSocketHandshakeError` (not 101, no
    ``msrp`` subprotocol, a bad HTTP answer, or a connection closed during
    the handshake).
    """
    parsed = parse_ws_url(url)
    timeout_class = timeout_class or MSRPConnectTimeout
    target = URI(host=parsed.host, port=parsed.port, use_tls=parsed.secure, session_id='')
    if parsed.secure and context is None:
        context = gevent_ssl.create_default_context()
    sock = connect_to(target, context=context if parsed.secure else None,
                      server_hostname=server_hostname or parsed.host, timeout_class=timeout_class, logger=logger)
    connection = WebSocketClient(host_header(parsed), parsed.path, max_message_size=max_message_size)
    try:
        pending = _handshake(sock, connection, connection.handshake(), timeout_class)
    except OSError as e:
        _close_quietly(sock)
        raise MSRPConnectError(parsed.host, parsed.port, 'WebSocket handshake: %s' % (str(e) or type(e).__name__))
    except BaseException:
        _close_quietly(sock)
        raise
    return WebSocketSocket(sock, connection, pending)


def accept_websocket(sock, timeout_class=None, max_message_size=None):
    """Do the server side of the handshake on accepted socket ``sock``; return a :class:`WebSocketSocket`.

    For relays (the scripted test relay).  Raises
    :class:`~msrplib.websocket.WebSocketHandshakeError` (the client did not
    ask for ``msrp``, bad HTTP), OSError, or the timeout (default
    :class:`~msrplib.connect.MSRPConnectTimeout`).
    """
    connection = WebSocketServer(max_message_size=max_message_size)
    pending = _handshake(sock, connection, b'', timeout_class or MSRPConnectTimeout)
    return WebSocketSocket(sock, connection, pending)

