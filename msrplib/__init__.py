"""msrplib: the Message Session Relay Protocol (RFC 4975, RFC 4976) on gevent.

Modules:

* :mod:`msrplib.protocol` -- sans-I/O: URIs, headers, chunks and the parser.
* :mod:`msrplib.transport` -- :class:`MSRPTransport`, one MSRP connection.
* :mod:`msrplib.connect` -- connectors, acceptors and :class:`MSRPServer`.
* :mod:`msrplib.session` -- :class:`MSRPSession` and :class:`GreenMSRPSession`.
* :mod:`msrplib.trafficlog` -- :class:`Logger`.
* :mod:`msrplib.websocket` and :mod:`msrplib.wsconnect` -- MSRP over WebSocket (RFC 7977).
"""

__version__ = '0.1.0'

__all__ = ['__version__', 'MSRPError']


class MSRPError(Exception):
    """Root of every error msrplib raises (except the connection-closure
    exceptions of :mod:`msrplib.transport`, which mirror Twisted's)."""
