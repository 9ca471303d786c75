"""zope.interface declarations of msrplib's roles.

The classes of :mod:`msrplib.connect`, :mod:`msrplib.transport`,
:mod:`msrplib.session` and :mod:`msrplib.trafficlog` declare these, so an
application can check an object it is given (``IConnector.providedBy(x)``)
or write its own implementation of a role and verify it with
``zope.interface.verify.verifyObject``.
"""

from zope.interface import Attribute, Interface

__all__ = ['IConnector', 'IMSRPServer', 'IMSRPTransport', 'IMSRPSession', 'IGreenMSRPSession', 'ILogger']


class IConnector(Interface):
    """Makes one MSRP connection: a connector (calling side) or an acceptor (answering side)."""

    def prepare(local_uri=None):
        """Get ready (listen, or reserve at a relay) and return the full local path (a list of URI)."""

    def complete(full_remote_path):
        """Connect or accept, bind, and return the bound transport."""

    def cleanup():
        """Release what prepare() took when complete() is not called or fails."""


class IMSRPServer(Interface):
    """Shares listening sockets between many sessions."""

    ports = Attribute('Read-only view of the listening sockets: interface -> port -> (use_tls, socket)')

    def prepare(local_uri=None, logger=None):
        """Listen for local_uri (sharing a socket on the same port) and return the full local path."""

    def complete(full_remote_path):
        """Wait for the connection binding from full_remote_path and return it bound."""

    def cleanup(local_uri):
        """Stop expecting local_uri."""


class IMSRPTransport(Interface):
    """One MSRP connection and the paths of the session it carries."""

    local_uri = Attribute('This endpoint\'s URI')
    local_path = Attribute('Relays in front of this endpoint (list of URI)')
    remote_uri = Attribute('The peer\'s URI')
    remote_path = Attribute('Relays in front of the peer (list of URI)')
    full_local_path = Attribute('local_path + [local_uri]')
    full_remote_path = Attribute('remote_path + [remote_uri]')
    logger = Attribute('The logger (replaceable)')

    def make_chunk(transaction_id=None, method='SEND', code=None, comment=None, data=b'', contflag=None,
                   start=1, end=None, length=None, message_id=None):
        """Make a chunk addressed to the peer."""

    def make_request(method):
        """Make a request addressed to the peer."""

    def make_send_request(message_id=None, data=b'', start=1, end=None, length=None):
        """Make a SEND chunk carrying data."""

    def write(bytes, sync=True):
        """Write bytes to the connection."""

    def write_buffers(buffers):
        """Write the bytes of a list of buffers in order, without joining them first."""

    def write_chunk(chunk, wait=True):
        """Write a chunk."""

    def write_response(chunk, code, comment, wait=True):
        """Answer a request."""

    def read_chunk(size=None):
        """Wait for the next chunk (or segment of one) and return it."""

    def check_incoming_SEND_chunk(chunk):
        """Return None if the chunk's paths match this session, else the error to answer with."""

    def bind(full_remote_path):
        """Bind as the active side."""

    def accept_binding(full_remote_path):
        """Bind as the passive side."""

    def next_host():
        """The URI to connect to."""

    def set_local_path(lst):
        """Set the relays in front of this endpoint."""

    def getHost():
        """This side's address (.host, .port)."""

    def getPeer():
        """The other side's address (.host, .port)."""

    def loseConnection(wait=True):
        """Close the connection."""


class IMSRPSession(Interface):
    """High-level MSRP over one bound transport."""

    msrp = Attribute('The transport')
    state = Attribute('The SessionState')
    RESPONSE_TIMEOUT = Attribute('Seconds to wait for a transaction response')
    SHUTDOWN_TIMEOUT = Attribute('Seconds shutdown() waits for the queue and responses')
    KEEPALIVE_INTERVAL = Attribute('Seconds of idleness before a keep-alive SEND')

    def send_chunk(chunk, response_cb=None):
        """Queue a chunk; report its response through response_cb."""

    def deliver_chunk(chunk, event=None):
        """Send a chunk and wait for its response."""

    def send_report(chunk, code, reason):
        """Send a REPORT about an incoming SEND."""

    def make_message(msg, content_type, message_id=None):
        """Make a SEND chunk carrying msg."""

    def send_message(msg, content_type):
        """Queue msg as one SEND chunk."""

    def deliver_message(msg, content_type):
        """Send msg as one SEND chunk and wait for its response."""

    def shutdown(sync=True):
        """Send what is queued, then close."""


class IGreenMSRPSession(IMSRPSession):
    """A session that queues incoming chunks."""

    incoming = Attribute('The queue of incoming chunks')

    def receive_chunk():
        """Return the next incoming chunk; after the end, raise its reason."""


class ILogger(Interface):
    """Receives msrplib's log messages and, optionally, its traffic."""

    def debug(message, *args):
        """Log a debugging message."""

    def info(message, *args):
        """Log an informational message."""

    def warning(message, *args):
        """Log a warning."""

    def error(message, *args):
        """Log an error."""

    def exception(message='', *args):
        """Log an error with the current traceback."""

    def received_chunk(data, transport):
        """Record a chunk read from transport."""

    def sent_chunk(data, transport):
        """Record a chunk written to transport."""

    def received_illegal_data(data, transport):
        """Record bytes from transport that are not MSRP."""
