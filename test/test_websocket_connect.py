"""msrplib.wsconnect: connect_websocket/accept_websocket and WebSocketSocket under MSRPTransport.

Real sockets on loopback (and real TLS for wss); the far side is either
accept_websocket (the library's server side) or a raw socket that does the
handshake with the sans-I/O WebSocketServer and then reads bytes as they
are.  Every wait is under a timeout.
"""

import os
import socket as stdlib_socket
import ssl

import gevent
import gevent.server
import pytest

from msrplib import tls as msrp_tls
from msrplib.connect import MSRPConnectError
from msrplib.protocol import URI
from msrplib.testing.wsrelay import ws_frame
from msrplib.transport import MSRPTransport, ConnectionDone
from msrplib.websocket import WebSocketServer
from msrplib.wsconnect import WebSocketSocket, accept_websocket, connect_websocket

T = 10
UA = URI(host='a.invalid', port=1, use_tls=False, transport='ws', session_id='a')
UB = URI(host='127.0.0.1', port=2, use_tls=False, session_id='b')


class Server:
    """A listener whose accepted connections go to ``handler(sock)`` (in a greenlet); ``tls``: wss."""

    def __init__(self, handler, tls=False):
        self.context = None
        if tls:
            import trustme
            self.ca = trustme.CA()
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ca.issue_cert('127.0.0.1', 'localhost').configure_cert(self.context)
        def handle(sock, address):
            if self.context is not None:
                sock = msrp_tls.wrap_socket(sock, self.context, server_side=True)
            handler(sock)
        self.server = gevent.server.StreamServer(('127.0.0.1', 0), handle)
        self.server.start()
        self.url = '%s://127.0.0.1:%d/msrp' % ('wss' if tls else 'ws', self.server.server_port)

    def client_context(self):
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def stop(self):
        self.server.stop(timeout=0)


@pytest.fixture
def servers():
    made = []
    yield made
    for server in made:
        server.stop()


def transport_pair(servers, tls=False):
    """Two bound transports: ``ta`` over connect_websocket, ``tb`` over accept_websocket."""
    accepted = gevent.event.AsyncResult()

    def handler(sock):
        accepted.set(accept_websocket(sock))
        gevent.sleep(T * 3)  # keep the connection while the test runs
    server = Server(handler, tls)
    servers.append(server)
    with gevent.Timeout(T):
        client = connect_websocket(server.url, context=server.client_context() if tls else None)
        ta, tb = MSRPTransport(UA, sock=client), MSRPTransport(UB, sock=accepted.get())
        job = gevent.spawn(tb.accept_binding, [UA])
        ta.bind([UB])
        job.get()
    return ta, tb


@pytest.mark.parametrize('tls', [False, True], ids=['ws', 'wss'])
def test_transports_over_a_websocket_exchange_chunks_one_message_each(servers, tls):
    ta, tb = transport_pair(servers, tls)
    big = os.urandom(300000)  # larger than one TLS write step: cut by the transport, whole on the wire
    with gevent.Timeout(T):
        ta.write_chunk(ta.make_send_request(data=b'small'))
        ta.write_chunk(ta.make_send_request(data=big))
        for _ in range(5):
            ta.write(ta.make_send_request(data=b'queued').encode(), sync=False)  # joined in one write
        chunks = [tb.read_chunk() for _ in range(7)]
        tb.write_response(chunks[0], 200, 'OK')
        assert ta.read_chunk().code == 200
    assert [c.data for c in chunks[:2]] == [b'small', big] and all(c.data == b'queued' for c in chunks[2:])
    assert tb._sock.connection.messages_received == 8  # the binding SEND + 7
    assert isinstance(ta._sock, WebSocketSocket) and ta.getPeer().port == int(servers[0].url.split(':')[2][:-5])
    ta.loseConnection()
    tb.loseConnection()


@pytest.mark.parametrize('tls', [False, True], ids=['ws', 'wss'])
def test_inbound_path_bytes_over_a_websocket_comes_from_the_tcp_socket(servers, tls):
    # what a relay's WebSocket connection to this end holds: the same estimate as over plain TCP (loopback here)
    ta, tb = transport_pair(servers, tls)
    for transport in (ta, tb):
        assert transport._sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_MAXSEG) > 0  # passed on
        assert transport.inbound_path_bytes() == 16 * 65483 + 65536  # loopback's advertised segment size
    ta.loseConnection()
    tb.loseConnection()


def test_closing_sends_a_close_frame_the_other_side_sees_as_a_clean_close(servers):
    ta, tb = transport_pair(servers)
    ta.loseConnection()
    with gevent.Timeout(T), pytest.raises(ConnectionDone):
        tb.read_chunk()
    assert tb._sock.connection.close_code == 1000


def raw_server(servers, script):
    """A server that does the handshake with the sans-I/O WebSocketServer, then runs ``script(sock)``."""
    def handler(sock):
        connection = WebSocketServer()
        while not connection.open:
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(connection.receive(data)[1])
        script(sock)
    server = Server(handler)
    servers.append(server)
    return server


def test_ping_is_answered_while_reading(servers):
    seen = gevent.event.AsyncResult()

    def script(sock):
        sock.sendall(ws_frame(b'ping!', 9))
        seen.set(sock.recv(100))
        gevent.sleep(T)
    server = raw_server(servers, script)
    with gevent.Timeout(T):
        transport = MSRPTransport(UA, sock=connect_websocket(server.url))
        reader = gevent.spawn(transport.read_chunk)
        pong = seen.get()
        reader.kill()
    assert pong[0] == 0x8A and pong[1] == 0x80 | 5  # a masked pong with the ping's 5 bytes
    transport.loseConnection()


def test_connecting_to_nothing_is_a_connect_error():
    sock = stdlib_socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    with gevent.Timeout(T), pytest.raises(MSRPConnectError):
        connect_websocket('ws://127.0.0.1:%d/' % port)
    with pytest.raises(ValueError):
        connect_websocket('http://127.0.0.1/')
