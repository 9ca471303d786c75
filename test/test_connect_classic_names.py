"""The classic names callers import from msrplib.connect: ConnectBase and MSRPServer.ports; URI's default port."""

import os
import subprocess
import sys

import pytest

from msrplib.connect import AcceptorDirect, ConnectBase, ConnectorDirect, MSRPServer, get_acceptor, get_connector
from msrplib.protocol import URI
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPRelaySettings, RelayConnection


@pytest.mark.parametrize('cls', [ConnectorDirect, AcceptorDirect, RelayConnection, ConnectorRelay, AcceptorRelay])
def test_every_connector_and_acceptor_is_a_connect_base(cls):
    assert issubclass(cls, ConnectBase)


def test_the_factories_give_connect_bases():
    relay = MSRPRelaySettings(domain='example.com', username='u', password='p', host='127.0.0.1', port=2855,
                              use_tls=False)
    for made in (get_connector(), get_acceptor(), get_connector(relay), get_acceptor(relay)):
        assert isinstance(made, ConnectBase)


def test_an_application_subclass_of_connect_base():
    class Custom(ConnectBase):
        pass

    custom = Custom(use_sessmatch=True)
    assert custom.use_sessmatch and custom.logger is not None
    with pytest.raises(NotImplementedError):
        custom.prepare()


@pytest.mark.parametrize('first', ['msrplib.relay', 'msrplib.connect', 'msrplib.session'])
def test_no_import_cycle_whatever_is_imported_first(first):
    code = ('import %s; from msrplib.connect import ConnectBase, ConnectorRelay; '
            'from msrplib.relay import RelayConnection; assert issubclass(ConnectorRelay, ConnectBase); '
            'assert issubclass(RelayConnection, ConnectBase)' % first)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def server():
    server = MSRPServer()
    yield server
    server.close()


def test_server_ports_maps_interface_to_port_to_tls_and_socket(server):
    plain = URI(host='127.0.0.1', port=0, use_tls=False)
    secure = URI(host='127.0.0.1', port=0, use_tls=True)
    server.prepare(plain)
    server.prepare(secure)
    shared = URI(host='127.0.0.1', port=plain.port, use_tls=False)
    server.prepare(shared)  # shares the first socket: no new entry
    ports = server.ports
    assert list(ports) == ['127.0.0.1']
    assert sorted(ports['127.0.0.1']) == sorted([plain.port, secure.port])
    use_tls, sock = ports['127.0.0.1'][plain.port]
    assert use_tls is False and sock.getsockname()[1] == plain.port
    use_tls, sock = ports['127.0.0.1'][secure.port]
    assert use_tls is True and sock.getsockname()[1] == secure.port


def test_server_ports_is_read_only_and_follows_the_server(server):
    uri = URI(host='127.0.0.1', port=0, use_tls=False)
    server.prepare(uri)
    ports = server.ports
    with pytest.raises(TypeError):
        ports['127.0.0.1'] = {}
    with pytest.raises(TypeError):
        ports['127.0.0.1'][1] = (False, None)
    server.stopListening()
    assert dict(server.ports) == {}


def test_uri_without_port_has_none_and_connections_use_2855():
    # Documented difference (doc/compatibility.md): the classic URI reads 2855 when no port is given; ours
    # keeps None (so the text form has no port, as written), and 2855 is used where a connection is made.
    uri = URI(host='127.0.0.1', use_tls=False, session_id='s')
    assert uri.port is None and str(uri) == 'msrp://127.0.0.1/s;tcp'
    assert URI.parse('msrp://example.com/s;tcp').port is None
    connector = ConnectorDirect()
    path = connector.prepare(URI(host='127.0.0.1', use_tls=False))
    try:
        assert path[0].port  # the real source port, or 2855 when it cannot be bound
    finally:
        connector.cleanup()
    from msrplib.relay import DEFAULT_RELAY_PORT
    assert DEFAULT_RELAY_PORT == 2855
