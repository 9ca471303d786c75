"""The classes declare the roles of msrplib.interfaces, and really provide them."""

import gevent
import pytest
from zope.interface.verify import verifyClass, verifyObject

from msrplib import interfaces
from msrplib.connect import AcceptorDirect, ConnectorDirect, MSRPServer
from msrplib.protocol import URI
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPRelaySettings, RelayConnection
from msrplib.session import GreenMSRPSession, MSRPSession
from msrplib.trafficlog import Logger
from msrplib.transport import MSRPTransport


@pytest.mark.parametrize('cls', [ConnectorDirect, AcceptorDirect, ConnectorRelay, AcceptorRelay, RelayConnection])
def test_connectors_and_acceptors_provide_IConnector(cls):
    assert interfaces.IConnector.implementedBy(cls)
    verifyClass(interfaces.IConnector, cls)


def test_relay_connection_objects_provide_IConnector():
    relay = MSRPRelaySettings('relay.example.com', 'alice', 'secret', host='127.0.0.1', port=1)
    for connector in (ConnectorRelay(relay), AcceptorRelay(relay), RelayConnection(relay, 'active')):
        verifyObject(interfaces.IConnector, connector)


def test_msrpserver_provides_IMSRPServer():
    verifyObject(interfaces.IMSRPServer, MSRPServer())


def test_logger_provides_ILogger():
    verifyObject(interfaces.ILogger, Logger())


def test_transport_and_sessions_provide_their_interfaces():
    with gevent.Timeout(5):
        acceptor = AcceptorDirect()
        connector = ConnectorDirect()
        remote = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        local = connector.prepare(URI(host='127.0.0.1', use_tls=False))
        accepting = gevent.spawn(acceptor.complete, local)
        transport = connector.complete(remote)
        other = accepting.get()
        verifyObject(interfaces.IMSRPTransport, transport)
        session = MSRPSession(transport)
        green = GreenMSRPSession(other)
        verifyObject(interfaces.IMSRPSession, session)
        verifyObject(interfaces.IGreenMSRPSession, green)
        assert not interfaces.IGreenMSRPSession.providedBy(session)
        session.shutdown()
        green.shutdown()
