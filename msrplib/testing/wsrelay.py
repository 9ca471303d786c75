"""A scripted MSRP relay that speaks WebSocket (RFC 7977) and plain MSRP: :class:`ScriptedWebSocketRelay`.

For tests of msrplib's WebSocket side, and for the error cases a real relay
(Kamailio) cannot be made to produce::

    with ScriptedWebSocketRelay() as relay:
        settings = relay.settings(ws=True)        # MSRPRelaySettings(ws_url='ws://127.0.0.1:PORT/msrp')
        ...                                       # ConnectorRelay(settings) / AcceptorRelay(settings)
        [client] = relay.wait_for_clients(1)      # the relay's side of each reservation
        client.send_raw(ws_frame(b'...'))         # anything on the wire, bypassing framing

It listens on a WebSocket port (``ws_url``; wss with ``tls=True``) and an
MSRP port (``tcp_port``, TLS too with ``tls=True``), both on loopback with
OS-chosen ports.  Its behaviour, a relay's (RFC 4976):

- AUTH: 401 with a digest challenge, then 200 with ``Use-Path`` (the
  relay's MSRP-port URI with a session-id of its own, ``;tcp``, reachable by
  TCP peers, as in RFC 7977's examples) and ``Expires``; 423 out of
  ``min_expires``..``max_expires``; 401 for wrong credentials.  A refresh
  on the same connection keeps the Use-Path.
- Requests and responses whose To-Path starts with this relay's URIs are
  forwarded to the client of the last of them, the relay's URIs moved to the
  front of From-Path; a SEND is answered 200 hop by hop (481 when nobody
  holds the session), and the hop-by-hop answers of the next hop are
  absorbed.
- A chunk larger than ``max_chunk_size`` (default 1 MiB) closes the
  sender's connection, as relays do.

Hostile knobs: ``handshake_response`` (bytes, or a callable taking the
request bytes and returning the answer) replaces the 101 answer -- see
:func:`handshake_answer` for a 101 with another subprotocol;
:meth:`RelayClient.send_raw` writes any bytes on a client's connection
(with :func:`ws_frame` for hand-made frames) and
:meth:`RelayClient.send_message` one WebSocket message of any content.
Every wait takes a timeout and raises :class:`~msrplib.testing.WaitTimeout`.
"""

import base64
import collections
import hashlib
import os
import ssl
import struct

import gevent
import gevent.event
import gevent.server
from gevent import socket as gevent_socket

from msrplib import digest, tls as msrp_tls
from msrplib.protocol import (
    URI, ToPathHeader, FromPathHeader, UsePathHeader, ExpiresHeader, MSRPHeader, HeaderParsingError)
from msrplib.testing._wait import DEFAULT_TIMEOUT, waiting_for
from msrplib.transport import MSRPTransport, ConnectionClosed, ChunkParseError
from msrplib.wsconnect import WebSocketSocket
from msrplib.websocket import WebSocketServer, MSRPWebSocketError

__all__ = ['ScriptedWebSocketRelay', 'RelayClient', 'ws_frame', 'handshake_answer']

_WS_GUID = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
_MAX_REQUEST = 16384

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def ws_frame(payload, opcode=OP_BINARY, fin=True, length=None, mask=None):
    """The bytes of one WebSocket frame (RFC 6455 §5.2), as a server sends it (unmasked unless ``mask``).

    ``length`` overrides the length field (to announce more than is sent);
    ``mask``: 4 bytes to mask the payload with (a client's frame).
    """
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack('!H', size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack('!Q', size)
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def handshake_answer(request, status=101, subprotocol='msrp'):
    """An HTTP answer to WebSocket upgrade ``request`` (bytes): 101 with a right ``Sec-WebSocket-Accept``
    and ``subprotocol`` (None: no ``Sec-WebSocket-Protocol`` line), or another ``status`` without a body."""
    if status != 101:
        return b'HTTP/1.1 %d Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' % status
    key = b''
    for line in request.split(b'\r\n'):
        name, _, value = line.partition(b':')
        if name.strip().lower() == b'sec-websocket-key':
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    lines = [b'HTTP/1.1 101 Switching Protocols', b'Upgrade: websocket', b'Connection: Upgrade',
             b'Sec-WebSocket-Accept: ' + accept]
    if subprotocol is not None:
        lines.append(b'Sec-WebSocket-Protocol: ' + subprotocol.encode())
    return b'\r\n'.join(lines) + b'\r\n\r\n'


class RelayClient:
    """The relay's side of one client connection.

    ``transport`` (an :class:`~msrplib.transport.MSRPTransport` over the
    connection), ``websocket`` (True for a WebSocket client), ``use_path``
    (the relay URI given to it by AUTH, None before), ``auth_count`` (AUTH
    requests answered 200: 1 + refreshes), ``expires``, ``chunks_received``
    (every chunk read from the client) and ``history`` (the last 1000 of
    them as ``(method or response code, transaction id)``).
    """

    def __init__(self, relay, sock, raw_sock, websocket):
        self.relay = relay
        self.sock = sock            # what the transport uses (a WebSocketSocket for WebSocket clients)
        self.raw_sock = raw_sock    # the TCP (or TLS) socket underneath
        self.websocket = websocket
        self.transport = None
        self.use_path = None
        self.auth_count = 0
        self.chunks_received = 0
        self.history = collections.deque(maxlen=1000)
        self.expires = None
        self.nonce = os.urandom(8).hex()
        self.closed = gevent.event.Event()
        self.error = None           # how the connection ended (the closure exception), once it did

    def send_raw(self, data):
        """Write ``data`` as is on the connection (bypassing WebSocket framing; between the relay's own messages)."""
        if self.websocket:
            self.sock.send_raw(data)
        else:
            self.raw_sock.sendall(data)

    def send_message(self, data, binary=True):
        """Write ``data`` as one WebSocket message (whatever it holds: part of a chunk, several chunks)."""
        connection = self.sock.connection
        frame = connection.send_binary(data) if binary else connection.send_message(data)
        self.sock.send_raw(frame)

    def close_raw(self):
        """Close the TCP connection at once (no close frame)."""
        try:
            self.raw_sock.shutdown(gevent_socket.SHUT_RDWR)
        except OSError:
            pass
        self.raw_sock.close()

    def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        """Wait until the connection ended; return its closure exception."""
        with waiting_for('the relay connection to close', timeout):
            self.closed.wait()
        return self.error

    def __repr__(self):
        return '<RelayClient %s %s>' % ('ws' if self.websocket else 'tcp', self.use_path)


class ScriptedWebSocketRelay:
    """A relay for tests: ``ScriptedWebSocketRelay(tls=False, username='alice', password='secret', ...)``.

    Keyword arguments: ``host`` ('127.0.0.1'), ``tls`` (wss and msrps),
    ``username``, ``password``, ``realm`` (also the domain), ``path`` of the
    WebSocket URL ('/msrp'), ``min_expires``/``max_expires``/``expires``
    (granted when not asked), ``max_chunk_size``, ``handshake_response``
    (see the module).  Start with :meth:`start` or ``with``.  Attributes:
    ``ws_url``, ``ws_port``, ``tcp_port``, ``clients`` (every
    :class:`RelayClient`), ``forwarded`` (chunks forwarded).
    """

    def __init__(self, host='127.0.0.1', tls=False, username='alice', password='secret', realm='example.com',
                 path='/msrp', min_expires=1, max_expires=3600, expires=600, max_chunk_size=1024 * 1024,
                 handshake_response=None):
        self.host = host
        self.tls = tls
        self.username = username
        self.password = password
        self.realm = self.domain = realm
        self.path = path
        self.min_expires, self.max_expires, self.expires = min_expires, max_expires, expires
        self.max_chunk_size = max_chunk_size
        self.handshake_response = handshake_response
        self.clients = []
        self.forwarded = 0
        self._sessions = {}         # session-id of a Use-Path URI -> RelayClient
        self._direct = {}           # URI of a peer that connected without AUTH -> its RelayClient
        self._changed = gevent.event.Event()
        self._servers = []
        self.ca = self._server_context = None
        self.ws_port = self.tcp_port = None

    # -- lifecycle

    def start(self):
        """Listen on both ports."""
        if self.tls:
            import trustme
            self.ca = trustme.CA()
            cert = self.ca.issue_cert(self.host, 'localhost', self.domain)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(context)
            self._server_context = context
        for kind in ('ws', 'tcp'):
            server = gevent.server.StreamServer((self.host, 0), self._handler(kind))
            server.start()
            self._servers.append(server)
            if kind == 'ws':
                self.ws_port = server.server_port
            else:
                self.tcp_port = server.server_port
        return self

    def stop(self):
        """Stop listening and close every client connection."""
        for server in self._servers:
            server.stop(timeout=1)
        self._servers = []
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.loseConnection()
            else:
                client.close_raw()

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def ws_url(self):
        """The WebSocket URL of the relay: ``ws[s]://host:port/path``."""
        return '%s://%s:%d%s' % ('wss' if self.tls else 'ws', self.host, self.ws_port, self.path)

    @property
    def uri(self):
        """The relay's MSRP URI on its MSRP port (session-less)."""
        return URI(host=self.domain, port=self.tcp_port, use_tls=self.tls, session_id='')

    def settings(self, tls=None, ws=True, **kwargs):
        """:class:`~msrplib.relay.MSRPRelaySettings` for this relay: over WebSocket (``ws``) or its MSRP port.

        ``tls`` is there for the callers of ``KamailioRelay.settings(tls)``
        (e.g. :func:`~msrplib.testing.session_pair`): None or the relay's own
        ``tls`` (anything else raises ``ValueError``: TLS is chosen when the
        relay is made).  Keyword arguments override the account (``domain``,
        ``username``, ``password``) or add settings (``chunk_size``,
        ``expires``...).
        """
        from msrplib.relay import MSRPRelaySettings
        if tls is not None and bool(tls) != self.tls:
            raise ValueError('this relay was made with tls=%s' % (self.tls,))
        if self.tls:
            kwargs.setdefault('credentials', self.client_ssl_context())
        if ws:
            kwargs.setdefault('ws_url', self.ws_url)
        else:
            kwargs.setdefault('host', self.host)
            kwargs.setdefault('port', self.tcp_port)
            kwargs.setdefault('use_tls', self.tls)
        return MSRPRelaySettings(kwargs.pop('domain', self.domain), kwargs.pop('username', self.username),
                                 kwargs.pop('password', self.password), **kwargs)

    def client_ssl_context(self):
        """An ``ssl.SSLContext`` trusting this relay's CA (``tls=True``)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        return context

    def wait_for_clients(self, count, timeout=DEFAULT_TIMEOUT, authenticated=True):
        """Wait until ``count`` clients are connected (and, with ``authenticated``, hold a reservation)."""
        with waiting_for('%d %sclients at the relay' % (count, 'authenticated ' if authenticated else ''), timeout):
            while True:
                found = [c for c in self.clients if c.use_path is not None or not authenticated]
                if len(found) >= count:
                    return found
                self._changed.clear()
                self._changed.wait()

    def _notify(self):
        self._changed.set()

    # -- connections

    def _handler(self, kind):
        def handle(sock, address):
            raw = sock
            try:
                if self._server_context is not None:
                    raw = msrp_tls.wrap_socket(sock, self._server_context, server_side=True)
                if kind == 'ws':
                    wrapped = self._accept_websocket(raw)
                    if wrapped is None:
                        return
                else:
                    wrapped = raw
            except (OSError, ssl.SSLError, MSRPWebSocketError, gevent.Timeout):
                sock.close()
                return
            client = RelayClient(self, wrapped, raw, kind == 'ws')
            self.clients.append(client)
            self._notify()
            try:
                self._serve(client)
            finally:
                client.closed.set()
                self._notify()
        return handle

    def _accept_websocket(self, sock):
        # The handshake: a scripted answer, or a real one (WebSocketServer); None when the script ends it.
        if self.handshake_response is None:
            connection = WebSocketServer()
            pending = b''
            with gevent.Timeout(DEFAULT_TIMEOUT):
                while not connection.open:
                    data = sock.recv(65536)
                    payload, outgoing = connection.receive(data)
                    if outgoing:
                        sock.sendall(outgoing)
                    if connection.error is not None or not data:
                        sock.close()
                        return None
                    pending = payload
            return WebSocketSocket(sock, connection, pending)
        request = b''
        with gevent.Timeout(DEFAULT_TIMEOUT):
            while b'\r\n\r\n' not in request and len(request) < _MAX_REQUEST:
                data = sock.recv(4096)
                if not data:
                    break
                request += data
        answer = self.handshake_response
        if callable(answer):
            answer = answer(request)
        sock.sendall(answer)
        gevent.sleep(0.2)
        sock.close()
        return None

    def _serve(self, client):
        transport = MSRPTransport(URI(host=self.domain, port=self.tcp_port, use_tls=self.tls, session_id=''),
                                  sock=client.sock)
        transport.max_chunk_size = self.max_chunk_size
        client.transport = transport
        try:
            while True:
                chunk = transport.read_chunk()
                if chunk is None:
                    continue
                client.chunks_received += 1
                client.history.append((chunk.method or chunk.code, chunk.transaction_id))
                if chunk.method == 'AUTH':
                    self._auth(client, chunk)
                else:
                    self._forward(client, chunk)
        except (ConnectionClosed, ChunkParseError) as e:
            client.error = e
        finally:
            transport.loseConnection()
            if client.use_path is not None:
                self._sessions.pop(client.use_path.session_id, None)

    def _respond(self, client, request, code, comment, headers=()):
        from msrplib.transport import make_response
        response = make_response(request, code, comment)
        if response is None:
            return
        for header in headers:
            response.add_header(header)
        client.transport.write_chunk(response)

    def _auth(self, client, chunk):
        header = chunk.headers.get('Authorization')
        if header is None:
            self._respond(client, chunk, 401, 'Unauthorized',
                          [MSRPHeader('WWW-Authenticate', digest.make_challenge(self.realm, client.nonce))])
            return
        try:
            params = digest.parse_authorization(header.encoded)
            valid = params.get('username') == self.username and digest.check_authorization(
                params, self.password, 'AUTH', self.realm, client.nonce)
        except digest.DigestError:
            valid = False
        if not valid:
            self._respond(client, chunk, 401, 'Unauthorized',
                          [MSRPHeader('WWW-Authenticate', digest.make_challenge(self.realm, client.nonce))])
            return
        try:
            asked = chunk.header_value('Expires')
        except HeaderParsingError:
            asked = None
        if asked is not None and asked < self.min_expires:
            self._respond(client, chunk, 423, 'Interval Out-of-Bounds',
                          [MSRPHeader('Min-Expires', str(self.min_expires))])
            return
        if asked is not None and asked > self.max_expires:
            self._respond(client, chunk, 423, 'Interval Out-of-Bounds',
                          [MSRPHeader('Max-Expires', str(self.max_expires))])
            return
        if client.use_path is None:
            client.use_path = URI(host=self.host, port=self.tcp_port, use_tls=self.tls, session_id=os.urandom(8).hex())
            self._sessions[client.use_path.session_id] = client
        client.expires = asked if asked is not None else self.expires
        client.auth_count += 1
        self._respond(client, chunk, 200, 'OK', [
            UsePathHeader(decoded=[client.use_path]), ExpiresHeader(decoded=client.expires),
            MSRPHeader('Authentication-Info', digest.make_authentication_info(params, self.password))])
        self._notify()

    def _forward(self, client, chunk):
        try:
            to_path = chunk.to_path
            from_path = chunk.from_path
        except HeaderParsingError:
            if chunk.method is not None:
                self._respond(client, chunk, 400, 'Bad paths')
            return
        ours = []
        for uri in to_path:
            if uri.session_id in self._sessions or (not uri.session_id and not ours):
                ours.append(uri)
            else:
                break
        rest = to_path[len(ours):]
        if not rest:
            return  # a hop-by-hop answer to a SEND we forwarded (or a request to the relay itself)
        if client.use_path is None and from_path:
            self._direct[from_path[0]] = client  # a peer without a reservation: reached back over its connection
        target = self._direct.get(rest[0])
        if target is None:
            target = self._sessions.get(ours[-1].session_id) if ours else None
        if target is None or target.transport is None or not target.transport.connected:
            if chunk.method == 'SEND':
                self._respond(client, chunk, 481, 'No such session')
            return
        if chunk.method == 'SEND':
            self._respond(client, chunk, 200, 'OK')
        chunk.headers['To-Path'] = ToPathHeader(decoded=rest)
        chunk.headers['From-Path'] = FromPathHeader(decoded=list(reversed(ours)) + list(from_path))
        try:
            target.transport.write_chunk(chunk)
            self.forwarded += 1
        except ConnectionClosed:
            pass
