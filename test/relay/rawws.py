"""Hand-written MSRP over a WebSocket (RFC 7977), for probing a relay from outside.

A :class:`RawWSClient` is a :class:`rawmsrp.RawClient` whose bytes travel in
WebSocket messages: wsproto does the handshake (``Sec-WebSocket-Protocol:
msrp``) and the framing, nothing of msrplib is used.  Every frame it sends
goes in one WebSocket text message (RFC 7977 section 4.2); every message it
receives is appended to the byte buffer ``recv_frame`` parses, and the
opcodes seen are kept in ``message_kinds``.  Every socket has a timeout.
"""

import os
import socket
import ssl
import sys

from wsproto import ConnectionType, WSConnection
from wsproto.utilities import LocalProtocolError
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection,
                            RejectData, Request, TextMessage)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rawmsrp import RawClient, new_id  # noqa: E402


class HandshakeRefused(Exception):
    """The server did not answer 101 with the msrp subprotocol; `.status` is its HTTP status."""

    def __init__(self, status, detail=''):
        super().__init__('WebSocket handshake refused: %s %s' % (status, detail))
        self.status = status


def open_websocket(host, port, use_tls=False, ssl_context=None, server_hostname='localhost',
                   timeout=5.0, subprotocols=('msrp',), path='/'):
    """Connect, do the HTTP upgrade and return ``(sock, ws, accept_event, leftover_events)``.

    Raises HandshakeRefused when the server does not accept.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    if use_tls:
        sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
        sock.settimeout(timeout)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host='%s:%d' % (host, port), target=path,
                                 subprotocols=list(subprotocols))))
    while True:
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise HandshakeRefused(None, 'connection closed during the handshake')
        ws.receive_data(data)
        events = list(ws.events())
        for index, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                return sock, ws, event, events[index + 1:]
            if isinstance(event, RejectConnection):
                body = b''
                for more in events[index + 1:]:
                    if isinstance(more, RejectData):
                        body += more.data
                sock.close()
                raise HandshakeRefused(event.status_code, body[:200])


class RawWSClient(RawClient):
    """One MSRP-over-WebSocket connection to a relay, with a wire log.

    Its own URI follows RFC 7977 section 5.2: a random ``.invalid`` host,
    the local TCP port, transport ``ws``; scheme ``msrps`` over wss.
    """

    def __init__(self, name, host, port, use_tls=False, ssl_context=None,
                 server_hostname='localhost', timeout=5.0, log=print):
        self.name = name
        self.timeout = timeout
        self.log = log
        self.sock, self.ws, self.accept, pending = open_websocket(
            host, port, use_tls, ssl_context, server_hostname, timeout)
        self.subprotocol = self.accept.subprotocol
        self.use_tls = use_tls
        self.local_port = self.sock.getsockname()[1]
        self.session_id = new_id(10)
        self.uri = '%s://%s.invalid:%d/%s;ws' % ('msrps' if use_tls else 'msrp', new_id(6),
                                                 self.local_port, self.session_id)
        self.buf = b''
        self.use_path = None
        self.expires = None
        self.message_kinds = []
        self.closed_by_peer = None
        self._handle(pending)

    def send(self, data):
        """Send `data` (one whole MSRP frame) as one WebSocket text message."""
        self._log('SENT', data)
        self.sock.sendall(self.ws.send(TextMessage(data=data.decode('utf-8'))))

    def send_binary(self, data):
        """Send `data` as one WebSocket binary message."""
        self._log('SENT (binary)', data)
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def _handle(self, events):
        for event in events:
            if isinstance(event, TextMessage):
                self.message_kinds.append('text')
                self.buf += event.data.encode('utf-8')
            elif isinstance(event, BytesMessage):
                self.message_kinds.append('binary')
                self.buf += bytes(event.data)
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed_by_peer = event.code
                try:
                    self.sock.sendall(self.ws.send(event.response()))
                except (OSError, LocalProtocolError):  # the close reply is best effort on a dying socket
                    pass

    def recv_frame(self, timeout=None):
        """Read one MSRP frame from the WebSocket messages; raises socket.timeout / ConnectionError."""
        self.sock.settimeout(timeout or self.timeout)
        while True:
            frame = self._take_frame()
            if frame is not None:
                self._log('RECEIVED', frame.raw)
                return frame
            if self.closed_by_peer is not None:
                raise ConnectionError('%s: WebSocket closed by relay (%s)' % (self.name, self.closed_by_peer))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('%s: connection closed by relay' % self.name)
            self.ws.receive_data(data)
            self._handle(self.ws.events())

    def expect_closed(self, timeout=None):
        """True when the relay closes the WebSocket or the connection within timeout."""
        self.sock.settimeout(timeout or self.timeout)
        try:
            while self.closed_by_peer is None:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.ws.receive_data(data)
                self._handle(self.ws.events())
            return True
        except socket.timeout:
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            return True
