"""Loopback helpers shared by the transport and hostile-peer tests."""

import socket as stdlib_socket

import gevent
import gevent.socket

from msrplib import tls
from msrplib.protocol import URI
from msrplib.transport import MSRPTransport

T = 5  # seconds: the most setting up a loopback connection may take


def socket_pair(host='127.0.0.1', server_ctx=None, buffer_size=None):
    """Two connected gevent sockets over loopback (client, server); TLS when ``server_ctx`` is given.

    ``buffer_size`` sets the client's send buffer and the server's receive
    buffer (before connecting, so that TCP sizes its window for them).
    """
    family = stdlib_socket.AF_INET6 if ':' in host else stdlib_socket.AF_INET
    listener = gevent.socket.socket(family, stdlib_socket.SOCK_STREAM)
    try:
        if buffer_size:
            listener.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, buffer_size)
        listener.bind((host, 0))
        listener.listen(1)
        with gevent.Timeout(T):
            client = gevent.socket.socket(family, stdlib_socket.SOCK_STREAM)
            if buffer_size:
                client.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, buffer_size)
            client.connect(listener.getsockname()[:2])
            server, _ = listener.accept()
            if server_ctx is not None:
                wrapping = gevent.spawn(tls.wrap_socket, server, server_ctx, server_side=True)
                client = tls.wrap_socket(client, tls.client_context())
                server = wrapping.get()
    finally:
        listener.close()
    return client, server


def raw_peer_transport():
    """(transport, raw gevent socket): a transport bound to 'local' whose peer is a raw socket for hand-made bytes."""
    raw, sock = socket_pair()
    local = URI(host='127.0.0.1', port=sock.getsockname()[1], use_tls=False, session_id='local')
    transport = MSRPTransport(local, sock=sock)
    transport.set_full_remote_path([URI(host='127.0.0.1', port=raw.getsockname()[1], use_tls=False,
                                        session_id='remote')])
    return transport, raw
