"""MSRPTransport: one MSRP connection, chunks in and out.

The transport owns a connected socket (plain or TLS, from :mod:`gevent`), an
:class:`~msrplib.protocol.MSRPParser` and the path state of the session the
connection carries.  It is created by the connectors of
:mod:`msrplib.connect`, which also bind it; a session
(:mod:`msrplib.session`) then drives it.  Every blocking call blocks only the
calling greenlet.

Closure is reported the way Twisted does: :class:`ConnectionDone` for a clean
close, :class:`ConnectionLost` for anything else; both are
:class:`ConnectionClosed`.
"""

import collections
import importlib.util
import logging
import select as _select
import socket as _stdlib_socket
import struct
import sys

import gevent
import gevent.socket
import gevent.ssl
from gevent.lock import Semaphore

from zope.interface import implementer

from msrplib import MSRPError
from msrplib.protocol import (
    MSRPData, MSRPParser, ChunkParseError, InvalidStartLine, HeaderParsingError,
    ToPathHeader, FromPathHeader, MessageIDHeader, ByteRangeHeader, StatusHeader, ByteRange, Status,
    CHUNK_START, BODY, random_transaction_id, random_message_id, _UNSET, _new_header)
from msrplib.interfaces import IMSRPTransport
from msrplib.trafficlog import Logger, wants_chunks

__all__ = [
    'MSRPTransport', 'make_response', 'make_report', 'Address',
    'ConnectionClosed', 'ConnectionDone', 'ConnectionLost', 'ChunkParseError',
    'MSRPTransactionError', 'MSRPBadRequest', 'MSRPBadContentType', 'MSRPNoSuchSessionError',
    'MSRPSessionAlreadyBound',
]


# ---------------------------------------------------------------------------
# Exceptions

def _twisted_errors():
    # Twisted's ConnectionClosed, ConnectionDone and ConnectionLost when Twisted is installed (found
    # without importing it), else three times Exception: the bases of the classes below.
    try:
        installed = importlib.util.find_spec('twisted') is not None
    except (ImportError, ValueError):
        installed = False
    if installed:
        try:
            from twisted.internet import error
        except Exception:  # an installed but broken Twisted: go on without it (any error its import raises)
            pass
        else:
            return error.ConnectionClosed, error.ConnectionDone, error.ConnectionLost
    return Exception, Exception, Exception


_TwistedClosed, _TwistedDone, _TwistedLost = _twisted_errors()


# Linux's struct tcp_info: tcpi_advmss, the segment size this end advertised, is the u32 at byte 84.
_TCP_INFO = getattr(_stdlib_socket, 'TCP_INFO', None) if sys.platform.startswith('linux') else None
_TCP_INFO_SIZE = 88
_ADVMSS_OFFSET = 84
_ADVMSS = struct.Struct('=I')


class ConnectionClosed(_TwistedClosed):
    """The connection is closed; base of :class:`ConnectionDone` and :class:`ConnectionLost`.

    When Twisted is installed, these three classes also derive from
    ``twisted.internet.error``'s classes of the same names, so that classic
    code such as ``failure.check(ConnectionDone)`` or ``except
    ConnectionDone`` written with Twisted's classes sees them.  Twisted is
    not imported when it is not installed, and is not a dependency.
    """

    default_message = 'Connection was closed.'

    def __init__(self, *args):
        Exception.__init__(self, *(args or (self.default_message,)))

    __str__ = Exception.__str__  # (not Twisted's, which adds its own message to the arguments)


class ConnectionDone(ConnectionClosed, _TwistedDone):
    """The connection was closed cleanly (by either side, between chunks)."""
    default_message = 'Connection was closed cleanly.'


class ConnectionLost(ConnectionClosed, _TwistedLost):
    """The connection was closed in a non-clean fashion (reset, error, cut in mid-chunk)."""
    default_message = 'Connection to the other side was lost in a non-clean fashion.'


class MSRPTransactionError(MSRPError):
    """A transaction failed: ``code`` (an MSRP status code) and ``comment``.

    Subclasses give each code a default comment.
    """

    code = None
    comment = None

    def __init__(self, comment=None, code=None):
        if comment is not None:
            self.comment = comment
        if code is not None:
            self.code = code
        MSRPError.__init__(self, self.comment, self.code)

    def __str__(self):
        if self.code is None:
            return str(self.comment)
        return '%s %s' % (self.code, self.comment) if self.comment else str(self.code)


class MSRPBadRequest(MSRPTransactionError):
    """400: the request is malformed."""
    code = 400
    comment = 'Bad Request'


class MSRPBadContentType(MSRPTransactionError):
    """415: the media type of the body is not accepted."""
    code = 415
    comment = 'Unsupported media type'


class MSRPNoSuchSessionError(MSRPTransactionError):
    """481: the request's paths do not match a session of this endpoint."""
    code = 481
    comment = 'No such session'


class MSRPSessionAlreadyBound(MSRPTransactionError):
    """506: the session is already bound to another connection."""
    code = 506
    comment = 'Session already bound'


Address = collections.namedtuple('Address', 'type host port')
Address.__doc__ = 'An endpoint address like Twisted\'s IPv4Address: type ("TCP"), host, port.'


_HELD = object()  # MSRPTransport._flusher while a hub callback is to send the held writes
_MSG_DONTWAIT = getattr(_stdlib_socket, 'MSG_DONTWAIT', 0)
_TLS_WRITE_STEP = 65536  # MSRPTransport._sendall: bytes given to one TLS send (a progress step of the peer)


class _WriteStalled(Exception):
    # raised by MSRPTransport._wait_for_progress's timer into the waiting send: never leaves the transport
    pass
_DRAIN_LIMIT = 4 * 1048576  # MSRPTransport: bytes read, at most, after a write failed (see _lose_writing)
_FIRST_READ_SIZE = 65536  # MSRPTransport: bytes asked by a connection's first read, and the least later on
_IOV_MAX = 512    # buffers given to one sendmsg() call (POSIX guarantees at least 16; Linux takes 1024)


# ---------------------------------------------------------------------------
# Responses and reports

def _first_uri_text(chunk, name):
    header = chunk._header(name)
    if header is None:
        return None
    try:
        return header.decoded[0]
    except HeaderParsingError:
        words = header.encoded.split()
        return words[0] if words else None


# header text -> str() of its first URI (a pure function of the text): answering a SEND decodes no path
_FIRST_URI_STR = {}


def _first_uri_str(chunk, name):
    # str(_first_uri_text(chunk, name)) when there is a first URI, else None
    raw = chunk._raw
    raw_text = raw.get(name) if raw is not None else None
    if type(raw_text) is str:
        # a parsed chunk's untouched text (unstripped): no header object needed when it was seen before
        first = _FIRST_URI_STR.get(raw_text)
        if first is not None:
            return first
    header = chunk._header(name)
    if header is None:
        return None
    text = header._encoded
    from_text = type(text) is str and header._decoded is _UNSET
    if from_text:
        first = _FIRST_URI_STR.get(text)
        if first is not None:
            return first
    first = _first_uri_text(chunk, name)
    if first is None:
        return None
    first = str(first)
    if from_text:
        if len(_FIRST_URI_STR) >= 256:
            _FIRST_URI_STR.clear()
        _FIRST_URI_STR[text] = first
        if type(raw_text) is str:
            _FIRST_URI_STR[raw_text] = first  # (the stripped text's first URI: the same value)
    return first


def _has_header(chunk, name):
    # chunk._header(name) is not None, without making the header object of a parsed chunk
    raw = chunk._raw
    if raw is not None:
        return name in raw
    return name in chunk.headers


def _report_mode(chunk, name, default):
    try:
        return chunk.failure_report if name == 'Failure-Report' else chunk.success_report
    except HeaderParsingError:
        return default


def make_response(chunk, code, comment):
    """Build the response to request ``chunk`` with ``code`` and ``comment``.

    Follows RFC 4975 §7.2 and Failure-Report: returns None when no response
    is to be sent (Failure-Report ``no``; ``partial`` with a 200).  The
    response to a SEND goes to the previous hop only (To-Path = first URI of
    the request's From-Path); other requests are answered along the whole
    From-Path.  Never raises on bad header values of ``chunk``.
    """
    failure_report = _report_mode(chunk, 'Failure-Report', 'yes')
    if failure_report == 'no' or (failure_report == 'partial' and code == 200):
        return None
    response = MSRPData(chunk.transaction_id, code=code, comment=comment)
    from_header = chunk._header('From-Path')
    if from_header is not None:
        if chunk.method == 'SEND':
            first = _first_uri_str(chunk, 'From-Path')
            response.add_header(ToPathHeader(str(first)))
        else:
            response.add_header(ToPathHeader(from_header.encoded))
    first_to = _first_uri_str(chunk, 'To-Path')
    if first_to is not None:
        response.add_header(FromPathHeader(first_to))
    return response


_GENERAL = object()  # _response_bytes: leave it to make_response()
# _response_bytes: (From-Path text, To-Path text) of a parsed SEND -> the response's bytes from the CRLF after its
# start line to the end-line's dashes; (code, comment) -> the start line's bytes after the transaction id.  Bounded.
_RESPONSE_TAILS = {}
_STATUS_BYTES = {}


def _response_bytes(chunk, code, comment):
    # make_response(chunk, code, comment).encode(), made straight from the header texts (the hot path of
    # every request answered); None when no response is due, _GENERAL for values that want the general path.
    failure_report = _report_mode(chunk, 'Failure-Report', 'yes')
    if failure_report == 'no' or (failure_report == 'partial' and code == 200):
        return None
    transaction_id = chunk.transaction_id
    if type(transaction_id) is not str or not transaction_id.isascii() or type(code) is not int:
        return _GENERAL
    raw = chunk._raw
    key = None
    if raw is not None and chunk.method == 'SEND' and (comment is None or type(comment) is str):
        # a parsed SEND's untouched path texts (or None: absent): the response's lines but for the transaction
        # id are a function of them and of the status, and were made before for the chunks of the same session
        key = (raw.get('From-Path'), raw.get('To-Path'))
        if type(key[0]) is not str or type(key[1]) is not str:
            key = None
        else:
            tail = _RESPONSE_TAILS.get(key)
            status = _STATUS_BYTES.get((code, comment))
            if tail is not None and status is not None:
                tid = transaction_id.encode('ascii')
                return b''.join((b'MSRP ', tid, status, tail, tid, b'$\r\n'))
    lines = ['MSRP %s %03d %s' % (transaction_id, code, comment) if comment else
             'MSRP %s %03d' % (transaction_id, code)]
    if _has_header(chunk, 'From-Path'):
        if chunk.method == 'SEND':
            lines.append('To-Path: %s' % (_first_uri_str(chunk, 'From-Path'),))
        else:
            lines.append('To-Path: %s' % (chunk._header('From-Path').encoded,))
    first_to = _first_uri_str(chunk, 'To-Path')
    if first_to is not None:
        lines.append('From-Path: %s' % (first_to,))
    lines.append('-------%s$\r\n' % (transaction_id,))
    text = '\r\n'.join(lines)
    if text.count('\r') != len(lines) or text.count('\n') != len(lines):
        return _GENERAL  # a line break in a value: the general path refuses it
    if key is not None:
        if len(_RESPONSE_TAILS) >= 256:
            _RESPONSE_TAILS.clear()
        _RESPONSE_TAILS[key] = (''.join(['\r\n' + line for line in lines[1:-1]]) + '\r\n-------').encode(
            'utf-8', 'surrogateescape')
        if len(_STATUS_BYTES) >= 64:
            _STATUS_BYTES.clear()
        _STATUS_BYTES[(code, comment)] = lines[0][5 + len(transaction_id):].encode('utf-8', 'surrogateescape')
    return text.encode('utf-8', 'surrogateescape')


def make_report(chunk, code, comment):
    """Build the REPORT for SEND ``chunk`` with status ``code``/``comment``.

    Returns None when the chunk's Success-Report/Failure-Report headers ask
    for no such report (RFC 4975 §7.1.2).  The REPORT travels back along the
    chunk's From-Path, carries its Message-ID, the Byte-Range of the bytes
    received and ``Status: 000 <code> <comment>``.  Raises
    :class:`HeaderParsingError` if the chunk's paths cannot be decoded.
    """
    if code == 200:
        if _report_mode(chunk, 'Success-Report', 'no') != 'yes':
            return None
    elif _report_mode(chunk, 'Failure-Report', 'yes') not in ('yes', 'partial'):
        return None
    report = MSRPData(random_transaction_id(), method='REPORT')
    report.add_header(ToPathHeader(decoded=chunk.from_path))
    report.add_header(FromPathHeader(decoded=[chunk.to_path[0]]))
    message_id = chunk.headers.get('Message-ID')
    if message_id is not None:
        report.add_header(MessageIDHeader(message_id.encoded))
    try:
        byte_range = chunk.byte_range
    except HeaderParsingError:
        byte_range = None
    start = byte_range.start if byte_range is not None else 1
    total = byte_range.total if byte_range is not None else None
    end = start + len(chunk.data) - 1
    if total is None and chunk.contflag == '$':
        total = end
    report.add_header(ByteRangeHeader(decoded=ByteRange(start, end, total)))
    report.add_header(StatusHeader(decoded=Status(code, comment)))
    return report


# ---------------------------------------------------------------------------
# The transport

@implementer(IMSRPTransport)
class MSRPTransport:
    """One MSRP connection and the paths of the session it carries.

    ``MSRPTransport(local_uri, logger=None, use_sessmatch=False, sock=None)``:
    ``local_uri`` is this endpoint's :class:`~msrplib.protocol.URI`;
    ``use_sessmatch`` compares only session-ids when checking incoming paths
    (RFC 6714); ``sock`` is the connected socket (a gevent socket, plain or
    TLS), which may also be given later with :meth:`attach`.

    Limits (class attributes, overridable per instance):

    ``read_size``
        the most bytes asked of the socket per read (default 1 MiB).  Reads
        start at 64 KiB (or ``read_size`` if smaller), double while the
        socket fills them and halve again when it hands out far less, so a
        bulk transfer is read in large blocks and a chat connection never
        asks for more than 64 KiB at a time.
    ``max_chunk_size``
        largest body :meth:`read_chunk` without ``size`` holds in memory
        (default 32 MiB); a larger chunk closes the connection with
        :class:`ChunkParseError`.
    ``max_pending_write_size``
        bytes of ``write(sync=False)`` data held before such a write waits
        for the socket too (default 1 MiB).
    ``parser_limits``
        keyword arguments for :class:`~msrplib.protocol.MSRPParser`.
    ``max_early_chunks``
        chunks :meth:`bind` keeps for :meth:`read_chunk` while it waits for
        the response to its binding SEND (default 64); one more closes the
        connection with :class:`ChunkParseError`.
    ``write_progress_timeout``
        seconds a write may wait for the socket to take at least one more
        byte (default 30; None or 0: no limit).  A peer that keeps the
        connection open but stops reading makes every write wait; once one
        waits this long without progress the connection is declared lost
        (:class:`ConnectionLost`, for that write, every other one and every
        read), so no write, and no :meth:`loseConnection`, blocks for ever.
        A slow peer that still reads is not affected: the limit is per wait
        for progress, not per write.
    """

    read_size = 1048576
    max_chunk_size = 32 * 1024 * 1024
    max_pending_write_size = 1024 * 1024
    parser_limits = {}
    max_early_chunks = 64
    write_progress_timeout = 30

    def __init__(self, local_uri, logger=None, use_sessmatch=False, sock=None):
        self.local_uri = local_uri
        self.logger = logger if logger is not None else Logger()
        self.use_sessmatch = use_sessmatch
        self.local_path = []
        self.remote_uri = None
        self.remote_path = []
        self._sock = None
        self._parser = MSRPParser(**self.parser_limits)
        self._events = collections.deque()
        self._pushback = collections.deque()   # whole chunks read early (e.g. during binding)
        self._response_hooks = {}              # transaction id -> callback, see expect_response()
        self._current = None                   # chunk whose body is being read
        self._body = []
        self._body_size = 0
        self._segment = 0
        self._segment_offset = 0
        self._closed = None                    # the closure exception, once closed
        self._write_lock = Semaphore()
        self._pending_writes = []
        self._pending_size = 0
        self._flusher = None
        self._host = self._peer = None
        self._can_send_now = False
        self._can_sendmsg = False
        self._next_read_size = _FIRST_READ_SIZE  # adapted to what the socket hands out (see read_size)
        self._accepted_paths = None            # ((To-Path text, From-Path text), _path_key()) last accepted
        if sock is not None:
            self.attach(sock)

    # -- paths

    def attach(self, sock):
        """Use the connected socket ``sock`` for this transport."""
        self._sock = sock
        # gevent's SSL sockets cannot be asked not to wait; plain ones can (send with timeout 0); a socket-like
        # object says so itself (a WebSocket writes whole messages: msrplib.wsconnect)
        self._can_send_now = (not isinstance(sock, gevent.ssl.SSLSocket) and hasattr(sock, 'send')
                              and getattr(sock, 'can_send_without_waiting', True))
        self._can_sendmsg = self._can_send_now and hasattr(sock, 'sendmsg')
        self._host = self._address(sock.getsockname)
        self._peer = self._address(sock.getpeername)

    @staticmethod
    def _address(getter):
        try:
            address = getter()
        except OSError:
            return None
        if not isinstance(address, tuple) or len(address) < 2:
            return Address('UNIX', address, None)  # e.g. a socketpair in tests
        return Address('TCP', address[0], address[1])

    @property
    def full_local_path(self):
        """``local_path + [local_uri]``: what goes into this side's SDP a=path."""
        return self.local_path + [self.local_uri]

    @property
    def full_remote_path(self):
        """``remote_path + [remote_uri]``: the peer's SDP a=path."""
        if self.remote_uri is None:
            return list(self.remote_path)
        return self.remote_path + [self.remote_uri]

    def set_local_path(self, lst):
        """Set the relays in front of this endpoint (a relay's Use-Path)."""
        self.local_path = list(lst)

    def set_full_remote_path(self, full_remote_path):
        """Set the peer's path (relays, then the peer's URI), as found in its SDP."""
        full_remote_path = list(full_remote_path)
        if not full_remote_path:
            raise ValueError('the remote path is empty')
        self.remote_path = full_remote_path[:-1]
        self.remote_uri = full_remote_path[-1]

    def next_host(self):
        """The URI to connect to: the first relay in the local path, else the first hop of the remote path."""
        if self.local_path:
            return self.local_path[0]
        return self.full_remote_path[0]

    def getHost(self):
        """This side's address: an object with ``.host`` and ``.port``."""
        return self._host

    def getPeer(self):
        """The other side's address: an object with ``.host`` and ``.port``."""
        return self._peer

    @property
    def connected(self):
        """True until the connection is closed."""
        return self._closed is None and self._sock is not None

    # -- making chunks

    def make_chunk(self, transaction_id=None, method='SEND', code=None, comment=None, data=b'', contflag=None,
                   start=1, end=None, length=None, message_id=None):
        """Make a chunk addressed to the peer (To-Path/From-Path from this transport's paths).

        A SEND gets a Message-ID (``message_id`` or a new random one) and a
        Byte-Range ``start-end/length``: ``end`` and ``length`` default to
        the end of ``data``; None written as ``*`` only when given so via
        :meth:`make_send_request`.  ``contflag`` defaults to ``'$'``, or
        ``'+'`` for a SEND that stops before ``length``.  With ``code``, a
        response is made instead of a request.
        """
        if isinstance(data, str):
            data = data.encode('utf-8')
        if code is not None:
            method = None
        chunk = MSRPData(transaction_id or random_transaction_id(), method=method, code=code, comment=comment,
                         data=data)
        headers = chunk.headers
        headers['To-Path'] = _new_header(ToPathHeader, self.local_path + self.remote_path + [self.remote_uri])
        headers['From-Path'] = _new_header(FromPathHeader, [self.local_uri])
        if method == 'SEND':
            if end is None:
                end = start - 1 + len(data)
            if length is None:
                length = start - 1 + len(data)
            if contflag is None:
                contflag = '+' if (end is not None and length is not None and end < length) else '$'
            headers['Message-ID'] = (MessageIDHeader(message_id) if message_id else
                                     _new_header(MessageIDHeader, random_message_id()))
            headers['Byte-Range'] = _new_header(ByteRangeHeader, ByteRange(start, end, length))
        elif message_id is not None:
            headers['Message-ID'] = MessageIDHeader(message_id)
        chunk.contflag = contflag or '$'
        return chunk

    def make_request(self, method):
        """Make a request ``method`` addressed to the peer (SEND gets Message-ID and Byte-Range)."""
        return self.make_chunk(method=method)

    def make_send_request(self, message_id=None, data=b'', start=1, end=None, length=None):
        """Make a SEND chunk carrying ``data`` at ``start`` of a message of ``length`` bytes.

        Like the classic library, a message longer than 2048 bytes gets
        Byte-Range end ``*`` (so the sender may interrupt it), unless ``end``
        is given.
        """
        if isinstance(data, str):
            data = data.encode('utf-8')
        end_given = end is not None
        if end is None:
            end = start - 1 + len(data)
        if length is None:
            length = start - 1 + len(data)
        contflag = '$' if end == length else '+'
        chunk = self.make_chunk(method='SEND', data=data, start=start, end=end, length=length,
                                message_id=message_id, contflag=contflag)
        if not end_given and length is not None and length > 2048:
            chunk.headers['Byte-Range'].decoded = ByteRange(start, None, length)
        return chunk

    # -- writing

    def _check_writable(self):
        if self._closed is not None:
            raise self._closed
        if self._sock is None:
            raise ConnectionLost('The transport has no connection.')

    def write(self, bytes, sync=True, wait=None):
        """Write ``bytes`` to the connection, in order with earlier writes.

        With ``sync`` (alias ``wait``) true, block this greenlet until the
        bytes are handed to the kernel; otherwise return at once.  Raises the
        closure exception (:class:`ConnectionClosed`) when the connection is
        closed; a write that fails closes it with :class:`ConnectionLost` (what
        the peer sent before is still returned by :meth:`read_chunk` first).
        """
        if wait is not None:
            sync = wait
        self._check_writable()
        if sync:
            with self._write_lock:
                self._flush_pending()
                self._sendall(bytes)
        else:
            if self._can_send_now and not self._pending_writes and not self._write_lock.locked():
                if self._events and self._flusher is None:
                    # more chunks are parsed already and their answers follow: send them together, from
                    # the hub, once this greenlet waits (one syscall for the responses of one read)
                    self._pending_writes.append(bytes)
                    self._pending_size += len(bytes)
                    self._flusher = _HELD
                    gevent.get_hub().loop.run_callback(self._send_held)
                    return
                bytes = self._send_without_waiting(bytes)
                if not bytes:
                    return
            self._pending_writes.append(bytes)
            self._pending_size += len(bytes)
            if self._pending_size > self.max_pending_write_size:
                with self._write_lock:  # the peer is not reading: wait instead of buffering more
                    self._flush_pending()
            elif self._flusher is None:
                self._flusher = gevent.spawn(self._flush_in_background)

    def _write_promptly(self, data):
        # write(data, sync=False), but on a plain socket sent at once (what the kernel takes), together with the
        # responses write() holds back until the hub runs: for what the peer waits for (a receiver's progress
        # REPORTs pace the sender, and a reader that is never short of input lets the hub run only now and then).
        self._check_writable()
        if self._can_send_now and not self._write_lock.locked() and \
                (self._flusher is _HELD or (self._flusher is None and not self._pending_writes)):
            self._flusher = None  # (a held callback then finds nothing to do)
            self._pending_writes.append(data)
            self._pending_size += len(data)
            self._send_pending_now()
            return
        self.write(data, sync=False)

    def write_buffers(self, buffers):
        """Write the bytes of ``buffers`` (a list of bytes-like objects) in order, blocking this greenlet.

        The same as ``write(b''.join(buffers))``, without the join: on a plain
        socket the buffers go to the kernel with vectored sends (``sendmsg``),
        so large bodies are never copied in Python.  Raises what :meth:`write`
        raises.
        """
        self._check_writable()
        if not self._can_sendmsg:
            self.write(buffers[0] if len(buffers) == 1 else b''.join(buffers))
            return
        with self._write_lock:
            self._flush_pending()
            self._sendmsg_all(list(buffers))

    def _sendmsg_all(self, buffers):
        sendmsg = self._sock.sendmsg
        first = 0  # buffers[first:] are still to send
        while first < len(buffers):
            if self._closed is not None:
                raise self._closed
            part = buffers[first:first + _IOV_MAX]
            try:
                if _MSG_DONTWAIT:
                    try:
                        sent = sendmsg(part, (), _MSG_DONTWAIT)  # no timer while the socket takes it at once
                    except BlockingIOError:
                        sent = self._wait_for_progress(sendmsg, part)  # the socket is full: wait, bounded
                else:
                    sent = self._wait_for_progress(sendmsg, part)
            except OSError as e:
                self._lose_writing(e)
                raise self._closed
            while first < len(buffers):  # drop what went out (and empty buffers, which never do)
                size = len(buffers[first])
                if sent < size:
                    if sent:
                        buffers[first] = memoryview(buffers[first])[sent:]
                    break
                sent -= size
                first += 1

    def _send_without_waiting(self, data):
        # Hand what the kernel takes at once to a plain socket; return the rest (saves a greenlet per write).
        try:
            sent = self._sock.send(data, 0, 0.0)
        except BlockingIOError:
            return data
        except OSError as e:
            self._lose_writing(e)
            raise self._closed
        return data[sent:] if sent < len(data) else b''

    def _send_held(self):
        # Hub callback: write what write(sync=False) held back, without blocking; a greenlet sends the rest.
        if self._flusher is not _HELD:
            return
        self._flusher = None
        if not self._pending_writes or self._closed is not None:
            return
        if self._write_lock.locked():
            self._flusher = gevent.spawn(self._flush_in_background)
            return
        try:
            self._send_pending_now()
        except ConnectionClosed:
            pass

    def _send_pending_now(self):
        # Send the pending writes without blocking; a greenlet sends what the kernel did not take.
        data = self._pending_writes
        self._pending_writes = []
        self._pending_size = 0
        rest = self._send_without_waiting(data[0] if len(data) == 1 else b''.join(data))
        if rest:
            self._pending_writes.append(rest)
            self._pending_size += len(rest)
            self._flusher = gevent.spawn(self._flush_in_background)

    def _flush_in_background(self):
        try:
            with self._write_lock:
                self._flush_pending()
        except ConnectionClosed:
            pass
        finally:
            self._flusher = None

    def _flush_pending(self):
        while self._pending_writes:
            data = self._pending_writes
            self._pending_writes = []
            self._pending_size = 0
            self._sendall(data[0] if len(data) == 1 else b''.join(data))

    def _sendall(self, data):
        # Send all of ``data``; each wait for the socket to take more is bounded by write_progress_timeout.
        if self._closed is not None:
            raise self._closed
        send = self._sock.send
        sent = 0
        try:
            if self._can_send_now:
                try:
                    sent = send(data, 0, 0.0)  # most writes fit at once: no timer for them
                except BlockingIOError:
                    pass
                if sent >= len(data):
                    return
                step = len(data)
            else:
                step = _TLS_WRITE_STEP  # a TLS write sends all it is given or waits: progress in steps
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast('B')
            while sent < len(view):
                if self._closed is not None:
                    raise self._closed
                sent += self._wait_for_progress(send, view[sent:sent + step])
        except OSError as e:
            self._lose_writing(e)
            raise self._closed

    def _wait_for_progress(self, send, data):
        # ``send(data)`` on a socket that may be full: gevent's send/sendmsg wait once for room and then send
        # what fits (possibly nothing).  Returns the bytes sent; a wait longer than write_progress_timeout
        # declares the connection lost (the peer does not read) and raises ConnectionLost.
        seconds = self.write_progress_timeout
        if not seconds:
            return send(data)
        stalled = _WriteStalled()
        try:
            with gevent.Timeout(seconds, stalled):
                return send(data)
        except _WriteStalled as e:
            if e is not stalled:
                raise
            self._lose(ConnectionLost('No write progress for %s seconds: the peer does not read' % (seconds,)))
            raise self._closed

    def write_chunk(self, chunk, wait=True):
        """Encode ``chunk``, log it and write it (see :meth:`write`)."""
        data = chunk.encode()
        self._log_sent(chunk)
        self.write(data, sync=wait)

    def _log_sent(self, chunk):
        if wants_chunks(self.logger):
            self._call_logger('sent_chunk', chunk)

    def _log_received(self, chunk):
        if wants_chunks(self.logger):
            self._call_logger('received_chunk', chunk)

    def _call_logger(self, method, data):
        # A logger that raises must not break reading, writing or binding: its error is logged (on the
        # ``msrplib`` stdlib logger, not through the logger that failed) and the chunk goes on.
        try:
            getattr(self.logger, method)(data, self)
        except Exception:
            logging.getLogger('msrplib').exception('%s.%s raised (ignored)', type(self.logger).__name__, method)

    def write_response(self, chunk, code, comment, wait=True):
        """Answer request ``chunk`` with ``code`` and ``comment`` (nothing if its Failure-Report says so)."""
        if not wants_chunks(self.logger):
            # nobody looks at the response as an MSRPData: write its bytes without making one
            data = _response_bytes(chunk, code, comment)
            if data is None:
                return
            if data is not _GENERAL:
                self.write(data, sync=wait)
                return
        response = make_response(chunk, code, comment)
        if response is not None:
            self.write_chunk(response, wait=wait)

    # -- reading

    def _receive(self):
        # Read once from the socket and parse; sets the closure reason and raises it at EOF/error.
        if self._closed is not None:
            raise self._closed
        size = self._next_read_size
        if size > self.read_size:  # (set on the instance, or before the first read)
            size = self.read_size
        try:
            data = self._sock.recv(size)
        except OSError as e:
            if self._closed is not None:
                if self._events:
                    return True  # a write failed meanwhile and kept what the peer had sent: that comes first
                raise self._closed
            self._lose(ConnectionLost(str(e) or type(e).__name__))
            raise self._closed
        received = len(data)
        if received == size:
            self._next_read_size = min(2 * size, self.read_size)
        elif received < size // 4 and size > _FIRST_READ_SIZE:
            self._next_read_size = size // 2
        if not data:
            if self._current is not None or self._parser.buffered:
                self._lose(ConnectionLost('Connection closed in the middle of a chunk.'))
            else:
                self._lose(ConnectionDone())
            raise self._closed
        try:
            self._events.extend(self._parser.feed(data))
        except InvalidStartLine:
            self._call_logger('received_illegal_data', data)
            self._lose(ConnectionLost('Received data that is not MSRP.'))
            return False
        except ChunkParseError as e:
            self._lose(ConnectionLost('Chunk parse error: %s' % (e,)))
            raise
        return True

    def read_chunk(self, size=None):
        """Wait for the next chunk and return it (an :class:`~msrplib.protocol.MSRPData`).

        With ``size``, a body longer than ``size`` comes out in "virtual"
        chunks: each has Byte-Range adjusted to the bytes it carries,
        contflag ``'+'`` except the last, and ``segment`` = 1, 2, 3...
        (``size`` is a hint: segments hold what has arrived, at least one
        byte -- the last byte received is held back until more comes, so
        that the segment ending the chunk is never empty; ``size=0`` is
        legal).  Without ``size``, a body larger than
        :attr:`max_chunk_size` closes the connection.

        Raises :class:`ChunkParseError` (and closes) on malformed input;
        returns None (and closes) when the peer sends something that is not
        MSRP at all; once the connection is closed, raises the closure
        reason (:class:`ConnectionDone` / :class:`ConnectionLost`) at every
        call.
        """
        if self._pushback and self._current is None:
            return self._pushback.popleft()
        return self._read(size)

    def _read(self, size=None):
        # read_chunk() without the chunks put back during binding
        events = self._events
        while True:
            while not events:
                if not self._receive():
                    return None
            kind, value = events.popleft()
            if kind is CHUNK_START:
                self._current = value
                self._body = []
                self._body_size = 0
                self._segment = 0
                self._segment_offset = 0
            elif kind is BODY:
                self._body.append(value)
                self._body_size += len(value)
                if size is None:
                    if self._body_size > self.max_chunk_size:
                        error = ChunkParseError('chunk body exceeds max_chunk_size=%d' % self.max_chunk_size)
                        self._lose(ConnectionLost(str(error)))
                        raise error
                elif self._body_size > max(size, 1) and not events:
                    # the last byte is held back, so that the segment that ends the chunk (its flag comes
                    # with the end-line, maybe in a later read) is never empty
                    return self._segment_out()
            else:
                chunk = self._chunk_out(value)
                if chunk.method is None and self._response_hooks:
                    hook = self._response_hooks.pop(chunk.transaction_id, None)
                    if hook is not None:
                        hook(chunk)
                        continue
                return chunk

    def expect_response(self, transaction_id, callback):
        """Have ``callback(response)`` take the response to ``transaction_id`` instead of :meth:`read_chunk`.

        For transactions the transport's owner starts behind the back of
        whoever reads (a relay connector refreshing its reservation while a
        session reads).  The callback runs in the reading greenlet.
        """
        self._response_hooks[transaction_id] = callback

    def forget_response(self, transaction_id):
        """Undo :meth:`expect_response` (e.g. after giving up waiting)."""
        self._response_hooks.pop(transaction_id, None)

    def _take_body(self, keep=0):
        # The body received so far as bytes, but for its last ``keep`` bytes, which stay buffered.
        body = self._body
        data = body[0] if len(body) == 1 else b''.join(body)
        if keep:
            self._body = [data[-keep:]]
            self._body_size = keep
            return data[:-keep]
        self._body = []
        self._body_size = 0
        return data

    def _segment_out(self):
        current = self._current
        chunk = current.copy()
        chunk.data = self._take_body(keep=1)
        self._segment += 1
        chunk.segment = self._segment
        if current.chunk_header is not None:
            # the segments of a chunk share its wire bytes: the first one has the head, the last the footer
            chunk.chunk_header = current.chunk_header if self._segment == 1 else b''
            chunk.chunk_footer = b''
        chunk.contflag = '+'
        self._adjust_byte_range(chunk)
        self._segment_offset += len(chunk.data)
        self._log_received(chunk)
        return chunk

    def _adjust_byte_range(self, chunk):
        header = chunk.headers.get('Byte-Range')
        if header is None:
            return
        try:
            byte_range = header.decoded
        except HeaderParsingError:
            return
        start = byte_range.start + self._segment_offset
        chunk.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(start, start + len(chunk.data) - 1,
                                                                        byte_range.total))

    def _chunk_out(self, flag):
        chunk = self._current
        self._current = None
        if self._segment:
            original = chunk
            original.contflag = flag
            chunk = chunk.copy()
            self._segment += 1
            chunk.segment = self._segment
            chunk.data = self._take_body()
            self._adjust_byte_range(chunk)
            if original.chunk_header is not None:
                chunk.chunk_header = b''
                chunk.chunk_footer = original.chunk_footer
        else:
            chunk.data = self._take_body()
        chunk.contflag = flag
        self._log_received(chunk)
        return chunk

    # -- path checks and binding

    def check_incoming_SEND_chunk(self, chunk):
        """Check the To-Path and From-Path of an incoming SEND.

        Returns None when they match this session, else the error to answer
        with: :class:`MSRPBadRequest` (400) for missing or undecodable paths,
        :class:`MSRPNoSuchSessionError` (481) for paths of another session.
        With ``use_sessmatch`` only the session-ids are compared (RFC 6714).
        """
        texts = None
        raw = chunk._raw
        if raw is not None:
            # a parsed chunk: the outcome depends only on the path texts and this transport's paths, so
            # texts accepted before (with the same paths) are accepted again without decoding them
            # (a path header already made into an object may have been changed: only untouched texts count)
            texts = (raw.get('To-Path'), raw.get('From-Path'))
            if type(texts[0]) is str and type(texts[1]) is str:
                accepted = self._accepted_paths
                if accepted is not None and accepted[0] == texts and accepted[1] == self._path_key():
                    return None
            else:
                texts = None
        error = self._check_paths(chunk)
        if error is None and texts is not None:
            self._accepted_paths = (texts, self._path_key())
        return error

    def _path_key(self):
        # What the path checks compare against (URI equality is by _key()), as a value.
        remote_uri = self.remote_uri
        return (self.use_sessmatch, self.local_uri._key(), None if remote_uri is None else remote_uri._key(),
                tuple([uri._key() for uri in self.local_path]), tuple([uri._key() for uri in self.remote_path]))

    def _check_paths(self, chunk):
        try:
            to_path = chunk.to_path
            from_path = chunk.from_path
        except HeaderParsingError as e:
            return MSRPBadRequest(str(e))
        if not to_path or not from_path:
            return MSRPBadRequest('To-Path and From-Path are required')
        if self.use_sessmatch:
            if to_path[-1].session_id != self.local_uri.session_id:
                return MSRPNoSuchSessionError('Invalid To-Path')
            if self.remote_uri is not None and from_path[-1].session_id != self.remote_uri.session_id:
                return MSRPNoSuchSessionError('Invalid From-Path')
            return None
        if len(to_path) != 1 or to_path[0] != self.local_uri:
            return MSRPNoSuchSessionError('Invalid To-Path')
        if self.remote_uri is not None:
            expected = self.local_path + self.remote_path + [self.remote_uri]
            if from_path != expected and from_path[-1] != self.remote_uri:
                return MSRPNoSuchSessionError('Invalid From-Path')
        return None

    def bind(self, full_remote_path):
        """Bind the connection as the active side: send an empty SEND and wait for its 200.

        A binding SEND from the peer arriving meanwhile (both sides active,
        RFC 6135) is checked and answered; other chunks are kept for
        :meth:`read_chunk`.  Raises :class:`MSRPTransactionError` (with the
        peer's code) when the binding is refused, or the closure exception.
        The caller puts a timeout around it.
        """
        self.set_full_remote_path(full_remote_path)
        chunk = self.make_send_request()
        self.write_chunk(chunk)
        while True:
            incoming = self._read_whole_chunk()
            if incoming.method is None:
                if incoming.transaction_id != chunk.transaction_id:
                    continue  # a response to nothing we sent: ignore
                if incoming.code == 200:
                    return
                if incoming.code == 481:
                    raise MSRPNoSuchSessionError(incoming.comment)
                raise MSRPTransactionError(comment=incoming.comment, code=incoming.code)
            if incoming.method == 'SEND' and not incoming.data and incoming.contflag == '$':
                error = self.check_incoming_SEND_chunk(incoming)
                if error is None:
                    self.write_response(incoming, 200, 'OK')
                    continue
                self.write_response(incoming, error.code, error.comment)
                continue
            if len(self._pushback) >= self.max_early_chunks:
                error = ChunkParseError('more than max_early_chunks=%d chunks before the binding was answered' %
                                        self.max_early_chunks)
                self._lose(ConnectionLost(str(error)))
                raise error
            self._pushback.append(incoming)

    def _read_whole_chunk(self):
        # From the wire, never from _pushback: bind() puts chunks there while it reads.
        incoming = self._read()
        if incoming is None:
            raise self._closed
        return incoming

    def accept_binding(self, full_remote_path):
        """Bind the connection as the passive side: wait for the peer's binding SEND and answer it.

        A binding SEND with a body is not answered here: the next
        :meth:`read_chunk` returns it, and its reader answers it like any
        other SEND (so it gets one response, not two).  Raises the error sent back
        (:class:`MSRPBadRequest`, :class:`MSRPNoSuchSessionError`) when the
        paths do not match, or the closure exception.  The caller puts a
        timeout around it.

        ``full_remote_path=None`` accepts any peer that addresses this
        endpoint: its path is learnt from the binding's From-Path (for
        servers and tools that have no SDP exchange; the To-Path is still
        checked).
        """
        if full_remote_path is not None:
            self.set_full_remote_path(full_remote_path)
        else:
            self.remote_uri = None
            self.remote_path = []
        while True:
            chunk = self._read_whole_chunk()
            if chunk.method is None or chunk.method == 'REPORT':
                continue  # nothing can be pending before binding; ignore
            if chunk.method != 'SEND':
                self.write_response(chunk, 400, 'Session not bound yet')
                continue
            self.complete_binding(chunk)
            return

    def complete_binding(self, chunk):
        """Answer binding SEND ``chunk``: 200 if its paths match (raises the error sent otherwise).

        A binding SEND that carries a body is kept for :meth:`read_chunk`.
        When no remote path is set, the peer's is taken from the chunk's
        From-Path (less this side's relays).
        """
        if self.remote_uri is None:
            self._learn_remote_path(chunk)
        error = self.check_incoming_SEND_chunk(chunk)
        if error is not None:
            self.write_response(chunk, error.code, error.comment)
            raise error
        if chunk.data or chunk.contflag != '$':
            self._pushback.append(chunk)
        else:
            self.write_response(chunk, 200, 'OK')

    def _learn_remote_path(self, chunk):
        try:
            from_path = chunk.from_path
        except HeaderParsingError:
            return  # check_incoming_SEND_chunk answers 400
        if not from_path:
            return
        if from_path[:len(self.local_path)] == self.local_path and len(from_path) > len(self.local_path):
            from_path = from_path[len(self.local_path):]
        self.set_full_remote_path(from_path)

    # -- closing

    def _lose(self, reason):
        if self._closed is None:
            self._closed = reason
            # what was parsed but not read yet is dropped: after a closure every read raises it
            self._events.clear()
            self._pushback.clear()
            self._current = None
            self._close_socket()

    def _lose_writing(self, error):
        # A write failed (the peer reset or closed the connection).  What the peer sent before is still
        # its word: the chunks parsed and the bytes the kernel holds are kept for the reads (a message the
        # peer ended with '#' just before closing is read as aborted), which then raise the closure.
        if self._closed is not None:
            return
        self._closed = ConnectionLost('Write failed: %s' % (error,))
        self._take_received()
        self._close_socket()

    def _take_received(self):
        # Parse what a plain socket has received already, without waiting (at most _DRAIN_LIMIT bytes).
        sock = self._sock
        if sock is None or not self._can_send_now or not isinstance(sock, gevent.socket.socket) or \
                not hasattr(_select, 'poll'):
            return  # (a TLS socket may hold part of a record, a WebSocket part of a frame: they would wait)
        taken = 0
        try:
            poller = _select.poll()
            poller.register(sock.fileno(), _select.POLLIN)
            while taken < _DRAIN_LIMIT and poller.poll(0):
                data = sock.recv(self.read_size)   # readable: returns at once
                if not data:
                    return
                taken += len(data)
                self._events.extend(self._parser.feed(data))
        except (OSError, ValueError, ChunkParseError, InvalidStartLine):
            return  # reset, closed, or not MSRP: what was parsed before stays

    def _close_socket(self):
        sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(_stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def inbound_path_bytes(self):
        """Bytes that the hop delivering to this end holds for sure, estimated from this socket; None if unknown.

        A relay (Kamailio) forwards every frame it reads at once and drops
        its connection to us when more than a small queue (32 KiB) waits
        for the socket.  What the socket takes for sure is the relay's send
        buffer as Linux starts it (20 segments of the size this end
        advertised, headers included: at least 16 segments of data) and our
        receive window as it starts (64 KiB); both grow later, but not
        dependably while we read slowly.  So: 16 segments + 64 KiB, from
        the segment size this end advertised (TCP_INFO on Linux, else
        TCP_MAXSEG) -- about 87 KB on a 1500-byte-MTU link, 1.1 MB on
        loopback.  None when the socket does not tell.
        """
        sock = self._sock
        segment = None
        try:
            if _TCP_INFO is not None:
                info = sock.getsockopt(_stdlib_socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
                if isinstance(info, bytes) and len(info) >= _TCP_INFO_SIZE:
                    segment = _ADVMSS.unpack_from(info, _ADVMSS_OFFSET)[0]
            if not segment:
                segment = sock.getsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_MAXSEG)
        except (OSError, AttributeError, ValueError, TypeError, struct.error):
            return None
        if not isinstance(segment, int) or segment <= 0:
            return None
        return 16 * segment + 65536

    def loseConnection(self, wait=True):
        """Close the connection after writing what is queued.

        After it, reads and writes raise :class:`ConnectionDone`.  ``wait`` is
        accepted for compatibility; closing does not block beyond the flush.
        """
        if self._closed is not None:
            return
        if self._sock is not None and self._pending_writes:
            try:
                with self._write_lock:
                    self._flush_pending()
            except ConnectionClosed:
                return
        self._lose(ConnectionDone())

    close = loseConnection

    def __repr__(self):
        return '<MSRPTransport %s -> %s%s>' % (self.local_uri, self.remote_uri,
                                               '' if self._closed is None else ' closed')
