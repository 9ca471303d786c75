"""Direct connections over real loopback sockets: ConnectorDirect, AcceptorDirect, MSRPServer, timeouts.

Timeouts of the connect layer are shortened by the ``short_timeouts`` fixture;
every blocking call also runs under ``gevent.Timeout`` so a bug fails the test
instead of hanging it.
"""

import socket as stdlib_socket

import gevent
import gevent.socket
import pytest

from msrplib import MSRPError
from msrplib import connect
from msrplib.connect import (
    ConnectorDirect, AcceptorDirect, DirectConnector, DirectAcceptor, MSRPServer, get_connector, get_acceptor,
    MSRPTimeout, MSRPConnectTimeout, MSRPIncomingConnectTimeout, MSRPBindSessionTimeout, MSRPConnectError,
    MSRPBindError)
from msrplib.protocol import URI
from msrplib.transport import MSRPTransport, MSRPNoSuchSessionError, MSRPTransactionError, ConnectionClosed

from test_hostile_peers import eof_within

T = 5
HOSTS = ['127.0.0.1', '::1']


pytestmark = pytest.mark.usefixtures('short_connect_timeouts')


def local(host='127.0.0.1', port=0, **kwargs):
    return URI(host=host, port=port, use_tls=False, **kwargs)


def free_port(host='127.0.0.1'):
    family = stdlib_socket.AF_INET6 if ':' in host else stdlib_socket.AF_INET
    with stdlib_socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def connect_pair(acceptor, connector, host='127.0.0.1', acceptor_uri=None, connector_uri=None):
    """Run the whole prepare -> SDP -> complete walk for one acceptor and one connector."""
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(acceptor_uri or local(host))
        connector_path = connector.prepare(connector_uri or local(host, port=None))
        try:
            passive = gevent.spawn(acceptor.complete, connector_path)
            active = connector.complete(acceptor_path)
            return active, passive.get()
        finally:
            acceptor.cleanup()
            connector.cleanup()


def exchange(ta, tb):
    with gevent.Timeout(T):
        ta.write_chunk(ta.make_send_request(data=b'ping'))
        assert tb.read_chunk().data == b'ping'
        tb.write_chunk(tb.make_send_request(data=b'pong'))
        assert ta.read_chunk().data == b'pong'


def refused(host, port):
    family = stdlib_socket.AF_INET6 if ':' in host else stdlib_socket.AF_INET
    with stdlib_socket.socket(family) as s:
        s.settimeout(T)
        return s.connect_ex((host, port)) != 0


class RawClient:
    """A hand-driven active side: a transport over a plain connection to ``port``, bound explicitly."""

    def __init__(self, port, host='127.0.0.1', session_id=None):
        sock = gevent.socket.create_connection((host, port))
        self.transport = MSRPTransport(local(host, 2855, session_id=session_id), sock=sock)

    def bind(self, path):
        with gevent.Timeout(T):
            self.transport.bind(path)
        return self.transport


# ---------------------------------------------------------------------------
# ConnectorDirect / AcceptorDirect

@pytest.mark.parametrize('host', HOSTS)
def test_connector_and_acceptor(host):
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    ta, tb = connect_pair(acceptor, connector, host)
    try:
        assert isinstance(ta, MSRPTransport) and isinstance(tb, MSRPTransport)
        assert ta.remote_uri == tb.local_uri and tb.remote_uri == ta.local_uri
        assert ta.getPeer().host == host and ta.getPeer().port == tb.local_uri.port
        exchange(ta, tb)
    finally:
        ta.loseConnection()
        tb.loseConnection()


def test_prepare_returns_the_full_local_path_and_writes_the_port_back():
    acceptor = AcceptorDirect()
    uri = local()
    try:
        path = acceptor.prepare(uri)
        assert path == [uri] and path[0] is uri
        assert uri.port and acceptor.getLocalPath() == [uri]
        assert not refused('127.0.0.1', uri.port)
    finally:
        acceptor.cleanup()
    assert refused('127.0.0.1', uri.port)
    acceptor.cleanup()  # twice is harmless
    connector = ConnectorDirect()
    mine = URI(host='127.0.0.1', use_tls=False)
    assert connector.prepare(mine) == [mine] and connector.getLocalPath() == [mine]
    generated = ConnectorDirect().prepare()[0]
    assert isinstance(generated, URI) and generated.session_id and not generated.use_tls


def test_acceptor_prepare_on_a_busy_port_raises_bind_error():
    first = AcceptorDirect()
    uri = local()
    first.prepare(uri)
    try:
        with pytest.raises(MSRPBindError) as info:
            AcceptorDirect().prepare(local(port=uri.port))
        assert isinstance(info.value, MSRPError)
    finally:
        first.cleanup()


def test_acceptor_closes_its_listener_after_one_connection():
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    uri = local()
    ta, tb = connect_pair(acceptor, connector, acceptor_uri=uri)
    try:
        assert refused('127.0.0.1', uri.port)
        exchange(ta, tb)
    finally:
        ta.loseConnection()
        tb.loseConnection()


def test_acceptor_on_a_fixed_port():
    port = free_port()
    ta, tb = connect_pair(AcceptorDirect(), ConnectorDirect(), acceptor_uri=local(port=port))
    try:
        assert tb.local_uri.port == port and ta.getPeer().port == port
    finally:
        ta.loseConnection()
        tb.loseConnection()


def test_sessmatch_through_the_connectors():
    acceptor, connector = AcceptorDirect(use_sessmatch=True), ConnectorDirect(use_sessmatch=True)
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(local())
        connector_path = connector.prepare(local(port=None))
        # what the acceptor learns from SDP differs from the connector's From-Path but for the session-id
        seen_by_acceptor = [URI(host='192.0.2.1', port=9, use_tls=False, session_id=connector_path[0].session_id)]
        passive = gevent.spawn(acceptor.complete, seen_by_acceptor)
        ta = connector.complete(acceptor_path)
        tb = passive.get()
    exchange(ta, tb)
    ta.loseConnection()
    tb.loseConnection()


def test_wrong_paths_fail_both_sides_with_481():
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    with gevent.Timeout(T):
        acceptor_path = acceptor.prepare(local())
        connector.prepare(local(port=None))
        passive = gevent.spawn(acceptor.complete, [local(port=1, session_id='someone-else')])
        with pytest.raises(MSRPNoSuchSessionError):
            connector.complete(acceptor_path)
        with pytest.raises(MSRPNoSuchSessionError):
            passive.get()
    connector.cleanup()
    acceptor.cleanup()


@pytest.mark.parametrize('host', HOSTS)
def test_connection_refused_raises_connect_error(host):
    port = free_port(host)
    connector = ConnectorDirect()
    connector.prepare(local(host, port=None))
    with pytest.raises(MSRPConnectError) as info, gevent.Timeout(T):
        connector.complete([local(host, port=port)])
    assert isinstance(info.value, MSRPError)
    assert info.value.host == host and info.value.port == port and str(port) in str(info.value)
    connector.cleanup()


def test_unresolvable_host_raises_connect_error():
    connector = ConnectorDirect()
    connector.prepare(local(port=None))
    with pytest.raises(MSRPConnectError), gevent.Timeout(T):
        connector.complete([URI(host='no-such-host.invalid', port=2855, use_tls=False)])


def test_connect_timeout(monkeypatch):
    """A peer that accepts TCP but never answers the TLS handshake: connecting takes too long."""
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 0.2)
    listener = gevent.socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    try:
        connector = ConnectorDirect()
        connector.prepare(URI(host='127.0.0.1', use_tls=True))
        with pytest.raises(MSRPConnectTimeout) as info, gevent.Timeout(T):
            connector.complete([URI(host='127.0.0.1', port=listener.getsockname()[1], use_tls=True)])
        assert isinstance(info.value, MSRPTimeout) and isinstance(info.value, MSRPError)
        assert '0.2' in str(info.value)
    finally:
        listener.close()


def test_incoming_connect_timeout(monkeypatch):
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 0.2)
    acceptor = AcceptorDirect()
    uri = local()
    acceptor.prepare(uri)
    with pytest.raises(MSRPIncomingConnectTimeout), gevent.Timeout(T):
        acceptor.complete([local(port=1)])
    assert refused('127.0.0.1', uri.port)  # the listener is closed after the failure


def test_acceptor_bind_timeout_when_the_peer_sends_nothing(monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.2)
    acceptor = AcceptorDirect()
    uri = local()
    acceptor.prepare(uri)
    silent = gevent.socket.create_connection(('127.0.0.1', uri.port))
    try:
        with pytest.raises(MSRPBindSessionTimeout), gevent.Timeout(T):
            acceptor.complete([local(port=1)])
        with gevent.Timeout(T):
            assert silent.recv(10) == b''  # the connection was closed
    finally:
        silent.close()


def test_connector_bind_timeout_when_the_peer_answers_nothing(monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.2)
    listener = gevent.socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    try:
        connector = ConnectorDirect()
        connector.prepare(local(port=None))
        with pytest.raises(MSRPBindSessionTimeout), gevent.Timeout(T):
            connector.complete([local(port=listener.getsockname()[1])])
        with gevent.Timeout(T):
            peer, _ = listener.accept()
            received = b''
            while True:
                data = peer.recv(65536)
                if not data:
                    break
                received += data
        assert received.startswith(b'MSRP ') and b' SEND\r\n' in received  # the binding SEND, then EOF
        peer.close()
        connector.cleanup()
    finally:
        listener.close()


def test_timeout_classes_and_defaults():
    assert MSRPTimeout.seconds == 30
    for cls in (MSRPConnectTimeout, MSRPIncomingConnectTimeout, MSRPBindSessionTimeout):
        assert issubclass(cls, MSRPTimeout) and issubclass(cls, MSRPError)
        assert isinstance(cls.seconds, (int, float))
        assert str(cls.seconds) in str(cls())


def test_timeout_class_attribute_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.1)
    with pytest.raises(MSRPBindSessionTimeout), gevent.Timeout(T):
        with MSRPBindSessionTimeout.timeout():
            gevent.sleep(1)


def test_get_connector_get_acceptor_and_aliases():
    assert DirectConnector is ConnectorDirect and DirectAcceptor is AcceptorDirect
    connector = get_connector()
    assert type(connector) is ConnectorDirect and connector.use_sessmatch is False
    acceptor = get_acceptor(use_sessmatch=True)
    assert type(acceptor) is AcceptorDirect and acceptor.use_sessmatch is True
    logger = connect.Logger(prefix='x ')
    assert get_connector(logger=logger).logger is logger
    assert get_acceptor(None, logger).logger is logger
    assert connect.DirectConnector(logger=logger, use_sessmatch=True).use_sessmatch


@pytest.mark.parametrize('nuisance', ['silent', 'closed', 'wrong-session', 'garbage'])
def test_acceptor_takes_its_peer_after_a_connection_that_does_not_bind(nuisance):
    # Issue 17: one silent connection (or connect+close) made complete() fail and the real peer was refused.
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    acceptor_path = acceptor.prepare(local())
    connector_path = connector.prepare(local(port=None))
    port = acceptor_path[0].port
    with gevent.Timeout(T):
        accepting = gevent.spawn(acceptor.complete, connector_path)
        other = gevent.socket.create_connection(('127.0.0.1', port))
        if nuisance == 'closed':
            other.close()
        elif nuisance == 'garbage':
            other.sendall(b'GET / HTTP/1.0\r\n\r\n' * 10)
        elif nuisance == 'wrong-session':
            wrong = RawClient(port)
            with pytest.raises(MSRPNoSuchSessionError):
                wrong.bind([local(port=port, session_id='someone-else')])
            with pytest.raises(ConnectionClosed):
                wrong.transport.read_chunk()   # and its connection was closed
        gevent.sleep(0.1)   # the nuisance is taken first
        assert not accepting.ready()
        ta = connector.complete(acceptor_path)
        tb = accepting.get()
    try:
        exchange(ta, tb)
        assert refused('127.0.0.1', port)    # one peer taken: the listening socket is closed
        if nuisance in ('silent', 'garbage'):
            assert eof_within(other, T)         # the connection that did not bind was dropped too
    finally:
        ta.loseConnection()
        tb.loseConnection()
        other.close()
        connector.cleanup()
        acceptor.cleanup()


def test_acceptor_reports_each_dropped_connection_and_goes_on(monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.3)
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    dropped = []

    def on_dropped(address, error):
        dropped.append((address, error))
        raise RuntimeError('a callback that raises does not stop the acceptor')

    acceptor.on_connection_dropped = on_dropped
    acceptor_path = acceptor.prepare(local())
    connector_path = connector.prepare(local(port=None))
    port = acceptor_path[0].port
    with gevent.Timeout(T):
        accepting = gevent.spawn(acceptor.complete, connector_path)
        closed = gevent.socket.create_connection(('127.0.0.1', port))
        address = closed.getsockname()[:2]
        closed.close()
        silent = gevent.socket.create_connection(('127.0.0.1', port))
        while len(dropped) < 2:
            gevent.sleep(0.05)
        ta = connector.complete(acceptor_path)
        tb = accepting.get()
    try:
        assert dropped[0][0] == address and isinstance(dropped[0][1], ConnectionClosed)
        assert dropped[1][0] == silent.getsockname()[:2] and isinstance(dropped[1][1], MSRPBindSessionTimeout)
        exchange(ta, tb)
    finally:
        ta.loseConnection()
        tb.loseConnection()
        silent.close()
        connector.cleanup()
        acceptor.cleanup()


def test_acceptor_keeps_accepting_while_a_binding_is_pending(monkeypatch):
    # A connection that never binds holds nothing up: the peer connecting after it binds at once.
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 60)
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 60)
    acceptor = AcceptorDirect()
    path = acceptor.prepare(local())
    silent = [gevent.socket.create_connection(('127.0.0.1', path[0].port)) for _ in range(5)]
    try:
        with gevent.Timeout(T):
            accepting = gevent.spawn(acceptor.complete, None)
            client = RawClient(path[0].port)
            active = client.bind(path)
            passive = accepting.get()
        exchange(active, passive)
        assert all(eof_within(sock, T) for sock in silent)   # complete() returned: the others are dropped
        active.loseConnection()
        passive.loseConnection()
    finally:
        for sock in silent:
            sock.close()
        acceptor.cleanup()


def test_acceptor_drops_the_oldest_binding_beyond_max_pending_bindings(monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 60)
    acceptor = AcceptorDirect()
    acceptor.max_pending_bindings = 3
    dropped = []
    acceptor.on_connection_dropped = lambda address, error: dropped.append((address, error))
    path = acceptor.prepare(local())
    accepting = gevent.spawn(acceptor.complete, None)
    silent = []
    try:
        for _ in range(6):
            silent.append(gevent.socket.create_connection(('127.0.0.1', path[0].port)))
            gevent.sleep(0.05)
        assert all(eof_within(sock, 2) for sock in silent[:3])
        assert len(acceptor._binding) == 3
        assert [address for address, _ in dropped] == [sock.getsockname()[:2] for sock in silent[:3]]
        assert all(isinstance(error, MSRPConnectError) and 'max_pending_bindings' in str(error)
                   for _, error in dropped)
        address = silent[3].getsockname()[:2]   # the one whose arrival dropped the first
        silent[3].close()
        with gevent.Timeout(T):
            while len(dropped) < 4:
                gevent.sleep(0.01)
        assert dropped[3][0] == address and isinstance(dropped[3][1], ConnectionClosed)
        with gevent.Timeout(T):
            active = RawClient(path[0].port).bind(path)
            passive = accepting.get()
        exchange(active, passive)
        active.loseConnection()
        passive.loseConnection()
    finally:
        for sock in silent:
            sock.close()
        accepting.kill()
        acceptor.cleanup()


@pytest.mark.parametrize('nuisance', ['closed', 'silent'])
def test_a_burst_of_connections_beyond_max_pending_bindings_does_not_drop_a_peer_that_already_sent(nuisance):
    # The listener of `msrp listen` on a loaded machine (a flaky test_hostile_listener run): the peer's
    # connection, its binding SEND already received, waited in the accept queue behind more than
    # max_pending_bindings others; accept() took them all without a pause, and each one beyond the limit
    # dropped the oldest binding -- the peer's, before its greenlet had read anything (it got a reset).
    acceptor = AcceptorDirect()
    acceptor.max_pending_bindings = 3
    path = acceptor.prepare(local())
    others = []
    try:
        with gevent.Timeout(T):
            client = RawClient(path[0].port)
            binding = gevent.spawn(client.bind, path)
            gevent.sleep(0)     # it runs until it waits for the 200: its binding SEND is written
            assert not binding.ready()
            for _ in range(6):
                others.append(gevent.socket.create_connection(('127.0.0.1', path[0].port)))
                if nuisance == 'closed':
                    others[-1].close()
            passive = acceptor.complete(None)   # all 7 are queued before it accepts
            active = binding.get()
        exchange(active, passive)
        active.loseConnection()
        passive.loseConnection()
    finally:
        for sock in others:
            sock.close()
        acceptor.cleanup()


def test_acceptor_keep_listening_returns_one_peer_per_complete():
    acceptor = AcceptorDirect()
    acceptor.keep_listening = True
    path = acceptor.prepare(local())
    port = path[0].port
    peers = []
    try:
        with gevent.Timeout(T):
            for number in range(3):
                accepting = gevent.spawn(acceptor.complete, None)
                active = RawClient(port, session_id='peer%d' % number).bind(path)
                passive = accepting.get()
                assert passive.remote_uri.session_id == 'peer%d' % number
                peers += [active, passive]
                exchange(active, passive)
                assert not refused('127.0.0.1', port)   # still listening between calls
    finally:
        acceptor.cleanup()
        for transport in peers:
            transport.loseConnection()
    assert refused('127.0.0.1', port)


def test_acceptor_raises_the_latest_failure_when_the_incoming_timeout_passes(monkeypatch):
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 0.3)
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.6)
    acceptor = AcceptorDirect()
    path = acceptor.prepare(local())
    silent = gevent.socket.create_connection(('127.0.0.1', path[0].port))
    try:
        with gevent.Timeout(T), pytest.raises(MSRPBindSessionTimeout):
            # accepting ends at 0.3 s; the silent connection still had until 0.6 s to bind
            acceptor.complete(None)
        assert refused('127.0.0.1', path[0].port) and eof_within(silent, T)
    finally:
        silent.close()


def test_acceptor_complete_without_prepare():
    with pytest.raises(MSRPError):
        AcceptorDirect().complete([local(port=1)])


# ---------------------------------------------------------------------------
# MSRPServer

@pytest.fixture
def server():
    server = MSRPServer()
    yield server
    server.close()


@pytest.mark.parametrize('host', HOSTS)
def test_server_one_session(server, host):
    uri = local(host)
    path = server.prepare(uri)
    assert path == [uri] and uri.port
    connector = ConnectorDirect()
    connector_path = connector.prepare(local(host, port=None))
    with gevent.Timeout(T):
        passive = gevent.spawn(server.complete, connector_path)
        ta = connector.complete(path)
        tb = passive.get()
    assert tb.local_uri is uri and tb.remote_uri == connector_path[0]
    exchange(ta, tb)
    ta.loseConnection()
    tb.loseConnection()


def test_server_many_concurrent_sessions_on_one_port(server):
    first = local()
    server.prepare(first)
    port = first.port
    uris = [first] + [local(port=port) for _ in range(49)]
    for uri in uris[1:]:
        server.prepare(uri)
        assert uri.port == port
    assert len(server.listeners) == 1

    def session(uri, i):
        connector = ConnectorDirect()
        connector_path = connector.prepare(local(port=None))
        passive = gevent.spawn(server.complete, connector_path)
        gevent.sleep(0.001 * (i % 5))
        ta = connector.complete([uri])
        tb = passive.get()
        assert tb.local_uri is uri
        ta.write_chunk(ta.make_send_request(data=b'hello %d' % i))
        assert tb.read_chunk().data == b'hello %d' % i
        ta.loseConnection()
        tb.loseConnection()
        return i

    with gevent.Timeout(T):
        jobs = [gevent.spawn(session, uri, i) for i, uri in enumerate(uris)]
        gevent.joinall(jobs, raise_error=True)
    assert sorted(job.value for job in jobs) == list(range(50))


def test_server_second_prepare_shares_the_socket(server):
    first, second = local(), None
    server.prepare(first)
    listener = server.listeners[('127.0.0.1', first.port)]
    second = local(port=first.port)
    server.prepare(second)
    assert server.listeners[('127.0.0.1', first.port)] is listener and len(server.listeners) == 1
    other = local()
    server.prepare(other)  # port 0: a new socket
    assert other.port != first.port and len(server.listeners) == 2


def test_server_switching_tls_on_a_port_reopens_it(server):
    plain = local()
    server.prepare(plain)
    gevent.sleep(0.01)  # the accept loop is running now
    listener = server.listeners[('127.0.0.1', plain.port)]
    secure = URI(host='127.0.0.1', port=plain.port, use_tls=True)
    server.prepare(secure)
    reopened = server.listeners[('127.0.0.1', plain.port)]
    assert reopened is not listener and reopened.use_tls and secure.port == plain.port
    assert server.fingerprint and server.fingerprint.startswith('sha-256 ')
    connector = ConnectorDirect(expected_fingerprint=server.fingerprint)
    connector_path = connector.prepare(URI(host='127.0.0.1', use_tls=True))
    with gevent.Timeout(T):
        passive = gevent.spawn(server.complete, connector_path)
        ta = connector.complete([secure])
        tb = passive.get()
    exchange(ta, tb)
    ta.loseConnection()
    tb.loseConnection()


def test_server_unknown_to_path_gets_481_and_is_closed(server):
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port)
    with pytest.raises(MSRPNoSuchSessionError):
        client.bind([local(port=uri.port, session_id='nobody-expects-me')])
    with pytest.raises(ConnectionClosed), gevent.Timeout(T):
        client.transport.read_chunk()


def test_server_first_chunk_not_a_send_is_refused_and_closed(server):
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port)
    client.transport.set_full_remote_path([uri])
    nickname = client.transport.make_chunk(method='NICKNAME')
    with gevent.Timeout(T):
        client.transport.write_chunk(nickname)
        response = client.transport.read_chunk()
    assert response.transaction_id == nickname.transaction_id and response.code in (400, 481)
    with pytest.raises(ConnectionClosed), gevent.Timeout(T):
        client.transport.read_chunk()


def test_server_binding_before_complete_is_called(server):
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port)
    with gevent.Timeout(T):
        binding = gevent.spawn(client.bind, [uri])
        gevent.sleep(0.1)  # the binding SEND has arrived and waits for complete()
        assert not binding.ready()
        tb = server.complete([client.transport.local_uri])
        ta = binding.get()
    exchange(ta, tb)
    ta.loseConnection()
    tb.loseConnection()


def test_server_complete_with_wrong_from_path_is_refused(server):
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port, session_id='same-session')
    with gevent.Timeout(T):
        binding = gevent.spawn(client.bind, [uri])
        # same session-id but another host: the SDP does not match the binding SEND
        with pytest.raises(MSRPNoSuchSessionError):
            server.complete([URI(host='192.0.2.1', port=2855, use_tls=False, session_id='same-session')])
        with pytest.raises(MSRPNoSuchSessionError):
            binding.get()


def test_server_binding_send_with_a_body(server):
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port)
    ta = client.transport
    ta.set_full_remote_path([uri])
    first = ta.make_send_request(data=b'a message in the binding SEND')
    with gevent.Timeout(T):
        ta.write_chunk(first)
        tb = server.complete([ta.local_uri])
        chunk = tb.read_chunk()
    assert chunk.data == first.data and chunk.transaction_id == first.transaction_id
    exchange(ta, tb)
    ta.loseConnection()
    tb.loseConnection()


def test_server_complete_times_out(server, monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.2)
    server.prepare(local())
    with pytest.raises(MSRPBindSessionTimeout), gevent.Timeout(T):
        server.complete([local(port=1)])


def test_server_drops_a_connection_that_never_binds(server, monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.2)
    uri = local()
    server.prepare(uri)
    silent = gevent.socket.create_connection(('127.0.0.1', uri.port))
    try:
        with gevent.Timeout(T):
            assert silent.recv(10) == b''
    finally:
        silent.close()


def test_server_drops_a_binding_nobody_completes(server, monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.2)
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port)
    with pytest.raises(ConnectionClosed):
        client.bind([uri])


def test_server_cleanup_forgets_a_uri(server):
    uri, kept = local(), None
    server.prepare(uri)
    kept = local(port=uri.port)
    server.prepare(kept)
    server.cleanup(uri)
    with pytest.raises(MSRPNoSuchSessionError):
        RawClient(uri.port).bind([uri])
    client = RawClient(uri.port)
    with gevent.Timeout(T):
        binding = gevent.spawn(client.bind, [kept])
        tb = server.complete([client.transport.local_uri])
        ta = binding.get()
    exchange(ta, tb)
    server.cleanup()
    with pytest.raises(MSRPNoSuchSessionError):
        RawClient(uri.port).bind([kept])


def test_server_stop_listening_and_close(server):
    uri = local()
    server.prepare(uri)
    client = RawClient(uri.port)
    with gevent.Timeout(T):
        binding = gevent.spawn(client.bind, [uri])
        tb = server.complete([client.transport.local_uri])
        ta = binding.get()
    server.stopListening()
    assert refused('127.0.0.1', uri.port) and not server.listeners
    exchange(ta, tb)  # connections already made go on
    server.prepare(uri)  # listening again on the same port
    assert not refused('127.0.0.1', uri.port)
    server.close()
    assert refused('127.0.0.1', uri.port) and not server.expected
    ta.loseConnection()
    tb.loseConnection()


def test_server_second_binding_for_the_same_session_gets_506(server):
    uri = local()
    server.prepare(uri)
    first, second = RawClient(uri.port, session_id='twice'), RawClient(uri.port, session_id='twice')
    with gevent.Timeout(T):
        binding = gevent.spawn(first.bind, [uri])
        gevent.sleep(0.1)
        with pytest.raises(MSRPTransactionError) as info:
            second.bind([uri])
        assert info.value.code == 506
        tb = server.complete([first.transport.local_uri])
        ta = binding.get()
    exchange(ta, tb)


def test_server_stop_listening_frees_the_port_at_once(server):
    """Regression: a listener was closed only once its accept greenlet ran again, so the port stayed taken."""
    uri = local()
    server.prepare(uri)
    gevent.sleep(0.01)  # the accept loop waits in accept()
    server.stopListening()
    assert refused('127.0.0.1', uri.port)
    again = local(port=uri.port)
    server.prepare(again)  # raised MSRPBindError (EADDRINUSE)
    assert again.port == uri.port


def test_server_switching_tls_on_a_listening_port():
    """Regression: switching TLS on a port whose accept loop was running raised MSRPBindError (EADDRINUSE)."""
    server = MSRPServer()
    try:
        plain = local()
        server.prepare(plain)
        gevent.sleep(0.01)
        secure = URI(host='127.0.0.1', port=plain.port, use_tls=True)
        server.prepare(secure)
        assert server.listeners[('127.0.0.1', plain.port)].use_tls
        server.prepare(local(port=plain.port))  # and back
        assert not server.listeners[('127.0.0.1', plain.port)].use_tls
    finally:
        server.close()


def test_acceptor_cleanup_during_complete_raises_connect_error():
    """Regression: cleanup() from another greenlet made complete() raise a bare socket error (cancel_wait_ex)."""
    acceptor = AcceptorDirect()
    acceptor.prepare(local())
    waiting = gevent.spawn(acceptor.complete, [local(port=1)])
    gevent.sleep(0.01)
    acceptor.cleanup()
    with pytest.raises(MSRPConnectError), gevent.Timeout(T):
        waiting.get()


def test_stalled_tls_handshake_error_names_the_handshake_limit(monkeypatch):
    # Issue 17: with MSRPIncomingConnectTimeout.seconds = None the error said "(None seconds)".
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 0.1)
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 0.3)
    acceptor = AcceptorDirect()
    path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=True))
    stalled = gevent.socket.create_connection(('127.0.0.1', path[0].port))
    try:
        with gevent.Timeout(T), pytest.raises(MSRPIncomingConnectTimeout) as info:
            acceptor.complete(None)
        assert 'TLS handshake not completed within 0.3 seconds' in str(info.value)
        assert eof_within(stalled, T)
    finally:
        stalled.close()
