"""Loopback connections for tests: socket pairs, a transport with a raw peer, a pair of bound sessions."""

import contextlib
import socket as stdlib_socket

import gevent
import gevent.socket

from msrplib import tls
from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import URI
from msrplib.session import GreenMSRPSession
from msrplib.transport import MSRPTransport
from msrplib.testing._wait import DEFAULT_TIMEOUT, waiting_for

__all__ = ['socket_pair', 'raw_peer_transport', 'session_pair', 'SessionPair', 'T']

T = 5  # seconds: the most setting up a loopback connection may take


def socket_pair(host='127.0.0.1', server_ctx=None, buffer_size=None, timeout=T):
    """Two connected gevent sockets over loopback (client, server); TLS when ``server_ctx`` is given.

    ``buffer_size`` sets the client's send buffer and the server's receive
    buffer (before connecting, so that TCP sizes its window for them).
    Raises :class:`~msrplib.testing.WaitTimeout` when connecting takes longer than ``timeout``.
    """
    family = stdlib_socket.AF_INET6 if ':' in host else stdlib_socket.AF_INET
    listener = gevent.socket.socket(family, stdlib_socket.SOCK_STREAM)
    try:
        if buffer_size:
            listener.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, buffer_size)
        listener.bind((host, 0))
        listener.listen(1)
        with waiting_for('a loopback connection to %s' % host, timeout):
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


class SessionPair(tuple):
    """``(active, passive)``: the connecting and the accepting session of :func:`session_pair`."""

    __slots__ = ()

    def __new__(cls, active, passive):
        return tuple.__new__(cls, (active, passive))

    @property
    def active(self):
        """The session of the side that connected (ConnectorDirect / ConnectorRelay)."""
        return self[0]

    @property
    def passive(self):
        """The session of the side that accepted (AcceptorDirect / AcceptorRelay)."""
        return self[1]


def _relay_settings(relay, use_tls):
    from msrplib.relay import MSRPRelaySettings
    if isinstance(relay, MSRPRelaySettings):
        return relay
    return relay.settings(use_tls)  # a KamailioRelay or a ScriptedWebSocketRelay


def _close_session(session, timeout):
    job = getattr(session, 'reader_job', None)
    if job is not None:
        job.kill(block=False)
    session.msrp.loseConnection(wait=False)
    if job is not None:
        gevent.joinall([job], timeout=timeout)


@contextlib.contextmanager
def session_pair(tls=False, relay=None, cls=GreenMSRPSession, timeout=DEFAULT_TIMEOUT, **session_kwargs):
    """Two sessions connected and bound over loopback: ``with session_pair() as (active, passive): ...``.

    ``tls=True`` runs msrps with an ephemeral self-signed certificate that
    the connecting side checks by its fingerprint (as the SDP
    ``a=fingerprint`` would tell it).  ``relay`` (a
    :class:`~msrplib.testing.KamailioRelay`, a
    :class:`~msrplib.testing.ScriptedWebSocketRelay` -- both sides then
    over WebSocket -- or an :class:`~msrplib.relay.MSRPRelaySettings`) puts both sides behind that
    relay (``ConnectorRelay`` and ``AcceptorRelay``).  ``cls`` makes the
    sessions, with ``session_kwargs`` (``accept_types``, ``on_incoming_cb``...).
    The context yields a :class:`SessionPair` and closes both sessions on exit.
    Raises :class:`~msrplib.testing.WaitTimeout` when connecting takes longer
    than ``timeout``, and what the connect layer raises when it fails.
    """
    if relay is None:
        acceptor = AcceptorDirect()
        passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=tls))
        connector = ConnectorDirect(expected_fingerprint=acceptor.fingerprint)
        active_path = connector.prepare(URI(host='127.0.0.1', use_tls=tls))
    else:
        from msrplib.relay import AcceptorRelay, ConnectorRelay
        acceptor = AcceptorRelay(_relay_settings(relay, tls))
        connector = ConnectorRelay(_relay_settings(relay, tls))
        with waiting_for('the relay reservations (AUTH) at %s' % (getattr(relay, 'host', relay),), timeout):
            passive_path = acceptor.prepare()
            active_path = connector.prepare()
    transports = []
    try:
        with waiting_for('the loopback MSRP connection and its binding (%s)' % ('msrps' if tls else 'msrp'),
                         timeout):
            accepting = gevent.spawn(acceptor.complete, active_path)
            try:
                transports.append(connector.complete(passive_path))
                transports.append(accepting.get())
            finally:
                accepting.kill()
    except BaseException:
        for transport in transports:
            transport.loseConnection(wait=False)
        connector.cleanup()
        acceptor.cleanup()
        raise
    sessions = []
    try:
        for transport in transports:
            sessions.append(cls(transport, **session_kwargs))
        yield SessionPair(*sessions)
    finally:
        for session in sessions:
            _close_session(session, timeout)
        for transport in transports[len(sessions):]:
            transport.loseConnection(wait=False)
