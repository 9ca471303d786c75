"""MSRP over WebSocket (RFC 7977), sans-I/O: handshake, framing, limits.

A WebSocket client (a browser, or this library) reaches MSRP through a
relay that speaks the ``msrp`` WebSocket subprotocol.  This module holds the
protocol logic only -- it never touches a socket and never imports gevent
(the gevent side is :mod:`msrplib.wsconnect`); it wraps :mod:`wsproto`.

Framing (RFC 7977 §4): every MSRP chunk travels in exactly one WebSocket
message, and a message carries one chunk.  :class:`ChunkSplitter` cuts the
byte stream :class:`~msrplib.transport.MSRPTransport` writes into whole
chunks, and :meth:`WebSocketConnection.send_message` frames each one: as a
text frame when the chunk is valid UTF-8, else as a binary frame (a chunk
with binary content must go in a binary frame).  Both kinds are accepted
on receipt.  Received messages are handed on as one byte stream: the MSRP
parser finds the chunk boundaries, so nothing is lost when a peer splits a
chunk over several messages or joins several in one (which RFC 7977
forbids to senders), and a connection that ends inside a chunk is a lost
connection, as over TCP.

URIs (RFC 7977 §5): the transport parameter of a WebSocket hop is ``ws``
(for ws:// and wss:// alike: the ``msrps`` scheme says TLS), and a
WebSocket client, which cannot be reached except over its own connection,
uses a random host in the ``.invalid`` domain (:func:`invalid_host`).
"""

import collections
import os
import urllib.parse

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, RejectData, Request,
    TextMessage)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from msrplib import MSRPError

__all__ = [
    'SUBPROTOCOL', 'DEFAULT_MAX_MESSAGE_SIZE', 'WebSocketURL', 'parse_ws_url', 'invalid_host', 'sdp_protocol',
    'ChunkSplitter', 'WebSocketConnection', 'WebSocketClient', 'WebSocketServer',
    'MSRPWebSocketError', 'WebSocketHandshakeError', 'WebSocketProtocolError', 'WebSocketMessageTooBig',
]

#: The WebSocket subprotocol of MSRP (RFC 7977 §4.1), asked in ``Sec-WebSocket-Protocol``.
SUBPROTOCOL = 'msrp'

#: Largest WebSocket message (all its fragments) accepted by default: the largest chunk body an
#: MSRPTransport holds (32 MiB) plus room for its headers.
DEFAULT_MAX_MESSAGE_SIZE = 32 * 1024 * 1024 + 65536

# WebSocket close codes (RFC 6455 §7.4.1)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_ABNORMAL = 1006  # (never sent: the code of a connection that ended without a close frame)
_CLEAN_CLOSE_CODES = (CLOSE_NORMAL, CLOSE_GOING_AWAY, 1005)  # 1005: a close frame without a code


class MSRPWebSocketError(MSRPError):
    """Base of the WebSocket errors; also raised alone for a WebSocket use RFC 7977 does not allow
    (a direct connection to a ``;ws`` URI: a WebSocket endpoint is reached only through its relay)."""


class WebSocketHandshakeError(MSRPWebSocketError):
    """The WebSocket opening handshake failed: the server answered with another status than 101
    (``status_code``), did not select the ``msrp`` subprotocol, or sent a malformed HTTP response."""

    def __init__(self, message, status_code=None):
        MSRPWebSocketError.__init__(self, message)
        self.status_code = status_code


class WebSocketProtocolError(MSRPWebSocketError, ConnectionError):
    """The peer broke the WebSocket protocol (bad frame, bad UTF-8 in a text frame, closed the
    connection inside a frame, closed with an error code): ``code`` is the WebSocket close code.

    It is also a :class:`ConnectionError`, so a transport reading a WebSocket declares the
    connection lost (:class:`~msrplib.transport.ConnectionLost`, with this message).
    """

    def __init__(self, message, code=CLOSE_PROTOCOL_ERROR):
        MSRPWebSocketError.__init__(self, message)
        self.code = code

    def __str__(self):
        return str(self.args[0]) if self.args else ''


class WebSocketMessageTooBig(WebSocketProtocolError):
    """A WebSocket message (all its fragments together) is larger than ``max_message_size`` (close code 1009)."""

    def __init__(self, message):
        WebSocketProtocolError.__init__(self, message, CLOSE_MESSAGE_TOO_BIG)


# ---------------------------------------------------------------------------
# URLs, URIs and SDP

WebSocketURL = collections.namedtuple('WebSocketURL', 'secure host port path')
WebSocketURL.__doc__ = ('A parsed ws:// or wss:// URL: ``secure`` (wss), ``host``, ``port`` (80/443 by default) and '
                        '``path`` (with its query, ``/`` by default).')


def parse_ws_url(url):
    """Parse ``ws://host[:port][/path]`` or ``wss://...`` into a :class:`WebSocketURL`.

    Raises ``ValueError`` for another scheme, a missing host, a bad port,
    user information or a fragment.
    """
    if not isinstance(url, str):
        raise ValueError('WebSocket URL must be a str, not %r' % (url,))
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError('Invalid WebSocket URL %r: %s' % (url, e))
    scheme = parts.scheme.lower()
    if scheme not in ('ws', 'wss'):
        raise ValueError('Invalid WebSocket URL %r: the scheme must be ws or wss' % (url,))
    if not parts.hostname:
        raise ValueError('Invalid WebSocket URL %r: no host' % (url,))
    if parts.username is not None or parts.password is not None:
        raise ValueError('Invalid WebSocket URL %r: user information is not allowed' % (url,))
    if parts.fragment:
        raise ValueError('Invalid WebSocket URL %r: a fragment is not allowed' % (url,))
    secure = scheme == 'wss'
    path = parts.path or '/'
    if parts.query:
        path += '?' + parts.query
    return WebSocketURL(secure, parts.hostname, port if port is not None else (443 if secure else 80), path)


_HOST_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'


def invalid_host(length=12):
    """A random host name in the ``.invalid`` domain, for a WebSocket client's own MSRP URI (RFC 7977 §5.2)."""
    return ''.join(_HOST_ALPHABET[byte % len(_HOST_ALPHABET)] for byte in os.urandom(length)) + '.invalid'


def is_invalid_host(host):
    """True when ``host`` is in the ``.invalid`` domain (the URI of a WebSocket client)."""
    return host.lower().rstrip('.').endswith('.invalid')


def sdp_protocol(use_tls):
    """The SDP m-line protocol of an MSRP endpoint over WebSocket: ``TCP/WSS/MSRP`` or ``TCP/WS/MSRP``."""
    return 'TCP/WSS/MSRP' if use_tls else 'TCP/WS/MSRP'


def host_header(url):
    """The HTTP ``Host`` value for :class:`WebSocketURL` ``url`` (the port only when not the default)."""
    host = '[%s]' % url.host if ':' in url.host else url.host
    if url.port != (443 if url.secure else 80):
        host += ':%d' % url.port
    return host


# ---------------------------------------------------------------------------
# Outgoing framing

_END_DASHES = b'-------'
_MAX_START_LINE = 4096


class ChunkSplitter:
    """Cuts an outgoing MSRP byte stream into whole chunks, one per WebSocket message.

    :meth:`feed` takes any piece of the stream (bytes-like) and returns the
    chunks it completes, as a list of bytes.  A chunk ends at its end-line
    ``-------<transaction-id><flag>CRLF``, which its body never contains
    (RFC 4975 §7.1; :meth:`~msrplib.protocol.MSRPData.encode` ensures it).
    Raises ``ValueError`` when the stream does not start with an MSRP start
    line (the writer's bug, not the peer's).
    """

    def __init__(self):
        self._buffer = bytearray()
        self._marker = None   # b'\r\n-------' + transaction id of the chunk being collected
        self._search = 0      # where to look for the marker next

    @property
    def buffered(self):
        """Bytes of an incomplete chunk held."""
        return len(self._buffer)

    def feed(self, data):
        """Add ``data`` to the stream; return the list of chunks it completed."""
        buffer = self._buffer
        if not buffer and self._marker is None:
            data = bytes(data)
            whole = self._whole(data)
            if whole is not None:
                return whole
        buffer += data
        chunks = []
        start = 0
        while True:
            marker = self._marker
            if marker is None:
                if start >= len(buffer):
                    break
                eol = buffer.find(b'\r\n', start, start + _MAX_START_LINE)
                if eol < 0:
                    if len(buffer) - start >= _MAX_START_LINE:
                        raise ValueError('outgoing data is not an MSRP chunk: %r' % (bytes(buffer[start:start + 40]),))
                    break
                marker = self._marker = self._marker_of(buffer[start:eol])
                self._search = eol
            found = buffer.find(marker, self._search)
            end = found + len(marker) + 3
            if found < 0 or end > len(buffer):
                self._search = max(self._search, len(buffer) - len(marker) - 3)
                break
            if buffer[end - 3] not in b'$+#' or buffer[end - 2:end] != b'\r\n':
                raise ValueError('outgoing MSRP chunk has a malformed end-line')
            chunks.append(bytes(buffer[start:end]))
            start = end
            self._marker = None
        if start:
            del buffer[:start]
            self._search = max(0, self._search - start)
        return chunks

    def _whole(self, data):
        # Fast path: ``data`` is exactly one whole chunk (what write_chunk writes): [data], else None.
        eol = data.find(b'\r\n', 0, _MAX_START_LINE)
        if eol < 0:
            return None
        marker = self._marker_of(data[:eol])
        tail = len(marker) + 3
        if len(data) >= eol + tail and data.endswith(b'\r\n') and data[-3:-2] in (b'$', b'+', b'#') and \
                data.find(marker, eol) == len(data) - tail:
            return [data]
        return None

    @staticmethod
    def _marker_of(start_line):
        words = bytes(start_line).split(b' ')
        if len(words) < 3 or words[0] != b'MSRP' or not words[1]:
            raise ValueError('outgoing data is not an MSRP chunk: %r' % (bytes(start_line[:40]),))
        return b'\r\n' + _END_DASHES + words[1]


# ---------------------------------------------------------------------------
# The WebSocket connection

class WebSocketConnection:
    """One side of a WebSocket carrying MSRP, sans-I/O (base of :class:`WebSocketClient` and
    :class:`WebSocketServer`).

    The I/O side hands every byte received to :meth:`receive`, which returns
    ``(payload, outgoing)``: the MSRP bytes the peer's messages carried
    (concatenated, in order) and the bytes to write back (pongs, the answer
    to a close).  After an error :attr:`error` holds the exception to raise
    once ``payload`` was delivered (the chunks before a bad frame are not
    lost) and ``outgoing`` holds the close frame to send before dropping
    the connection.  :attr:`closed` becomes true once the peer closed (a
    close frame, or the end of the stream -- without a close frame that is
    an error, code 1006, as is a close frame with an error code); :attr:`messages_received` counts
    the whole data messages received.

    ``max_message_size``: the largest message accepted, all fragments
    together (default :data:`DEFAULT_MAX_MESSAGE_SIZE`); a larger one is
    :class:`WebSocketMessageTooBig`.  Nothing here holds a whole message:
    payload is handed on as it arrives, so memory stays bounded by what one
    :meth:`receive` is given.

    ``text_frames`` (class attribute, default True): send chunks that are
    valid UTF-8 as text frames (else every chunk goes as binary).
    """

    text_frames = True

    def __init__(self, connection_type, max_message_size=None):
        self._ws = WSConnection(connection_type)
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE if max_message_size is None else max_message_size
        self.open = False           # True once the handshake completed
        self.closed = False         # True once the peer closed (close frame or end of stream)
        self.close_code = None      # the peer's close code, when it sent one
        self.close_reason = None
        self.error = None           # the exception to raise after the payload received before it
        self.subprotocol = None
        self.messages_received = 0  # whole data messages received
        self._message_size = 0      # bytes of the message being received so far
        self._in_message = False    # a message (or a frame) is being received

    # -- receiving

    def receive(self, data):
        """Feed ``data`` (b'' at the end of the stream); return ``(payload, outgoing)`` (see the class)."""
        if self.error is not None or self.closed:
            return b'', b''
        if not data:
            self.closed = True
            if self.open and self._inside_frame():
                self.error = WebSocketProtocolError('Connection closed in the middle of a WebSocket frame',
                                                    CLOSE_ABNORMAL)
            elif self.open:
                # RFC 6455 §7.1.5: a WebSocket that ends without the close handshake was closed abnormally
                self.error = WebSocketProtocolError('WebSocket connection closed without a close frame',
                                                    CLOSE_ABNORMAL)
            else:
                self.error = self._eof_during_handshake()
            return b'', b''
        try:
            self._ws.receive_data(data)
        except RemoteProtocolError as e:
            return b'', self._fail_handshake(e)
        return self._process()

    def _process(self):
        payload = []
        outgoing = []
        try:
            for event in self._ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    data = event.data
                    if type(data) is str:
                        data = data.encode('utf-8')
                    self._message_size += len(data)
                    if self._message_size > self.max_message_size:
                        self._message_size = 0
                        return self._error(payload, outgoing, WebSocketMessageTooBig(
                            'WebSocket message larger than max_message_size=%d' % self.max_message_size))
                    if data:
                        payload.append(bytes(data))
                    self._in_message = not (event.frame_finished and event.message_finished)
                    if event.message_finished and event.frame_finished:
                        self._message_size = 0
                        self.messages_received += 1
                elif isinstance(event, Ping):
                    outgoing.append(self._ws.send(event.response()))
                elif isinstance(event, Pong):
                    pass
                elif isinstance(event, CloseConnection):
                    if self._ws.state.name == 'OPEN':
                        # wsproto found a protocol violation (state still open): close with its code
                        return self._error(payload, outgoing, WebSocketProtocolError(
                            'WebSocket protocol error: %s' % (event.reason or event.code), event.code))
                    self.closed = True
                    self.close_code, self.close_reason = event.code, event.reason
                    try:
                        outgoing.append(self._ws.send(event.response()))
                    except LocalProtocolError:
                        pass  # we had closed first: this was the answer
                    if event.code not in _CLEAN_CLOSE_CODES:
                        self.error = WebSocketProtocolError('WebSocket closed by the peer with code %s%s' % (
                            event.code, ' (%s)' % event.reason if event.reason else ''), event.code)
                    break
                else:
                    extra = self._handshake_event(event)
                    if extra:
                        outgoing.append(extra)
                    if self.error is not None:
                        break
        except RemoteProtocolError as e:
            return b'', self._fail_handshake(e)
        return b''.join(payload), b''.join(outgoing)

    def _error(self, payload, outgoing, error):
        self.error = error
        try:
            outgoing.append(self._ws.send(CloseConnection(code=error.code, reason=str(error)[:100])))
        except LocalProtocolError:
            pass
        return b''.join(payload), b''.join(outgoing)

    def _inside_frame(self):
        if self._in_message:
            return True
        # bytes of a frame header or payload not made into an event yet (wsproto keeps them in its decoder)
        try:
            return len(self._ws.connection._proto._frame_decoder.buffer) > 0
        except AttributeError:
            return False

    def _handshake_event(self, event):
        raise NotImplementedError

    def _fail_handshake(self, error):
        self.error = WebSocketHandshakeError('Bad WebSocket handshake: %s' % (error,))
        return b''

    def _eof_during_handshake(self):
        return WebSocketHandshakeError('Connection closed during the WebSocket handshake')

    # -- sending

    def send_message(self, data):
        """The bytes of one WebSocket message carrying ``data`` (one MSRP chunk): text if UTF-8, else binary.

        Raises :class:`MSRPWebSocketError` when the connection is not open.
        """
        if self.text_frames:
            try:
                data = bytes(data).decode('utf-8')
            except UnicodeDecodeError:
                pass
        try:
            return self._ws.send(BytesMessage(data=data) if type(data) is not str else TextMessage(data=data))
        except LocalProtocolError as e:
            raise MSRPWebSocketError('Cannot send on the WebSocket: %s' % (e,))

    def send_binary(self, data):
        """The bytes of one binary WebSocket message carrying ``data``."""
        try:
            return self._ws.send(BytesMessage(data=bytes(data)))
        except LocalProtocolError as e:
            raise MSRPWebSocketError('Cannot send on the WebSocket: %s' % (e,))

    def ping(self, payload=b''):
        """The bytes of a ping frame."""
        try:
            return self._ws.send(Ping(payload=payload))
        except LocalProtocolError as e:
            raise MSRPWebSocketError('Cannot send on the WebSocket: %s' % (e,))

    def close(self, code=CLOSE_NORMAL, reason=None):
        """The bytes of a close frame (b'' when closing was already sent or the connection is not open)."""
        try:
            return self._ws.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:
            return b''


class WebSocketClient(WebSocketConnection):
    """The client side: ``WebSocketClient(host, path='/', subprotocol='msrp', max_message_size=None)``.

    :meth:`handshake` gives the opening request (``Host: host``, ``GET path``,
    ``Sec-WebSocket-Protocol: msrp``); :meth:`receive` then reads the answer.
    A 101 that selects ``subprotocol`` makes :attr:`open` true; anything
    else sets :attr:`error` to a :class:`WebSocketHandshakeError`.  The HTTP
    answer is bounded by h11 (16 KiB of headers).
    """

    def __init__(self, host, path='/', subprotocol=SUBPROTOCOL, max_message_size=None, extra_headers=None):
        WebSocketConnection.__init__(self, ConnectionType.CLIENT, max_message_size)
        self.host = host
        self.path = path
        self.wanted_subprotocol = subprotocol
        self.extra_headers = list(extra_headers or [])

    def handshake(self):
        """The bytes of the opening handshake request."""
        return self._ws.send(Request(host=self.host, target=self.path, subprotocols=[self.wanted_subprotocol],
                                     extra_headers=self.extra_headers))

    def _handshake_event(self, event):
        if isinstance(event, AcceptConnection):
            if event.subprotocol != self.wanted_subprotocol:
                self.error = WebSocketHandshakeError(
                    'The WebSocket server did not select the %r subprotocol (it answered %r)'
                    % (self.wanted_subprotocol, event.subprotocol), 101)
                return b''
            self.subprotocol = event.subprotocol
            self.open = True
        elif isinstance(event, RejectConnection):
            self.error = WebSocketHandshakeError(
                'The WebSocket server refused the connection: HTTP %s' % (event.status_code,), event.status_code)
        elif isinstance(event, RejectData):
            pass
        return b''


class WebSocketServer(WebSocketConnection):
    """The server side (relays, the scripted test relay): ``WebSocketServer(subprotocol='msrp',
    max_message_size=None)``.

    :meth:`receive` reads the client's request and answers it: 101 with
    ``Sec-WebSocket-Protocol: msrp`` when the client offers it, else 400
    (and :attr:`error` is a :class:`WebSocketHandshakeError`).  ``request``
    is the client's :class:`wsproto.events.Request` once read.
    """

    def __init__(self, subprotocol=SUBPROTOCOL, max_message_size=None):
        WebSocketConnection.__init__(self, ConnectionType.SERVER, max_message_size)
        self.wanted_subprotocol = subprotocol
        self.request = None

    def _handshake_event(self, event):
        if isinstance(event, Request):
            self.request = event
            if self.wanted_subprotocol not in event.subprotocols:
                self.error = WebSocketHandshakeError('The client did not offer the %r subprotocol'
                                                     % (self.wanted_subprotocol,), 400)
                return self._ws.send(RejectConnection(status_code=400))
            self.subprotocol = self.wanted_subprotocol
            self.open = True
            return self._ws.send(AcceptConnection(subprotocol=self.wanted_subprotocol))
        return b''

    def _fail_handshake(self, error):
        WebSocketConnection._fail_handshake(self, error)
        return b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'

