"""MSRPSession and GreenMSRPSession: transactions, responses and reports over one transport.

An :class:`MSRPSession` runs a reader greenlet and, while chunks are queued,
a writer greenlet over a bound :class:`~msrplib.transport.MSRPTransport`.  The reader answers incoming
requests as RFC 4975 says (200, 400, 415, 481, 501), matches responses to the
transactions this side sent, sends Success-Reports when asked and hands
accepted chunks to the application.  The writer sends queued chunks in
order.  A response that does not arrive within ``RESPONSE_TIMEOUT`` is
replaced by a local one (408, or 200 when the chunk's Failure-Report is
``partial`` or ``no``).

When the session ends, for whatever reason, the application learns it once:
``on_incoming_cb(error=failure)`` where ``failure.value`` is the reason
(:class:`~msrplib.transport.ConnectionDone` for a clean close).
:class:`GreenMSRPSession` turns this into a queue read with
:meth:`~GreenMSRPSession.receive_chunk`.
"""

import collections
import enum
import heapq
import os
import sys
import time
import traceback

import gevent
from gevent import Greenlet
from gevent.event import AsyncResult, Event
from gevent.queue import Queue, Full

from zope.interface import implementer

from msrplib import MSRPError
from msrplib.interfaces import IMSRPSession, IGreenMSRPSession
from msrplib.protocol import (
    MSRPData, ContentTypeHeader, ToPathHeader, FromPathHeader, HeaderParsingError, ByteRange, ByteRangeHeader,
    ContentDispositionHeader, MSRPHeader)
from msrplib.transport import (
    make_report, MSRPTransactionError, MSRPTransport, ConnectionClosed, ConnectionDone, ConnectionLost)
from msrplib.message import REPORT_STEPS_IN_FLIGHT
from msrplib.trafficlog import wants_chunks

__all__ = ['MSRPSession', 'GreenMSRPSession', 'MSRPSessionError', 'SessionState', 'Failure',
           'contains_mime_type', 'LocalResponse', 'Response200OK', 'Response408Timeout']


# Bytes a relay's connection to this end holds for sure when the socket cannot tell (see RELAY_PATH_BYTES).
_UNKNOWN_PATH_BYTES = 64 * 1024


class MSRPSessionError(MSRPError):
    """The session cannot do what was asked (e.g. send after it ended)."""


class LocalResponse(MSRPTransactionError):
    """A transaction outcome made on this side, as in the classic API: ``LocalResponse(comment, code)``.

    It has ``code`` and ``comment`` like every :class:`MSRPTransactionError`.
    The classic module-level instances :data:`Response200OK` and
    :data:`Response408Timeout` are here for code that imports them.  Note
    that the response callbacks of this library get their local responses
    as :class:`~msrplib.protocol.MSRPData` with the same ``code`` (200 or
    408; see :meth:`MSRPSession.send_chunk`), not as these objects: compare
    ``response.code``, not identity.
    """

    def __repr__(self):
        return '<LocalResponse %s %s>' % (self.code, self.comment)


#: the classic local "200 OK" outcome (code 200)
Response200OK = LocalResponse('OK', 200)
#: the classic local timeout outcome (code 408)
Response408Timeout = LocalResponse('Timed out while waiting for transaction response', 408)


class SessionState(str, enum.Enum):
    """Life cycle of an :class:`MSRPSession` (compares equal to the classic strings)."""
    CONNECTED = 'CONNECTED'   #: sending and receiving
    FLUSHING = 'FLUSHING'     #: shutdown() called: sending what is queued, waiting for responses
    CLOSING = 'CLOSING'       #: closing the connection
    DONE = 'DONE'             #: ended; on_incoming_cb(error=...) was called

    def __str__(self):
        return self.value


class Failure:
    """Why a session ended, shaped like Twisted's ``Failure``.

    ``value`` is the exception, ``type`` its class, ``tb`` its traceback (or
    None).
    """

    def __init__(self, value, tb=None):
        self.value = value
        self.type = type(value)
        self.tb = tb if tb is not None else getattr(value, '__traceback__', None)

    def getErrorMessage(self):
        """The exception's message (its class name when it has none)."""
        return str(self.value) or self.type.__name__

    def getTraceback(self):
        """The formatted traceback text."""
        return ''.join(traceback.format_exception(self.type, self.value, self.tb))

    def check(self, *types):
        """Return the first of ``types`` the exception is an instance of, else None."""
        for error_type in types:
            if isinstance(self.value, error_type):
                return error_type
        return None

    def raiseException(self):
        """Raise the exception."""
        raise self.value.with_traceback(self.tb)

    def __repr__(self):
        return '<Failure %s: %s>' % (self.type.__name__, self.getErrorMessage())


def contains_mime_type(mimetypelist, mimetype):
    """True if ``mimetype`` is matched by one of ``mimetypelist`` (``*`` and ``type/*`` wildcards).

    Comparison ignores case and parameters (``text/plain; charset=utf-8``).
    """
    if '*' in mimetypelist:
        return True  # the usual accept_types=['*']
    mimetype = mimetype.split(';', 1)[0].strip().lower()
    major = mimetype.split('/', 1)[0]
    for pattern in mimetypelist:
        pattern = pattern.split(';', 1)[0].strip().lower()
        if pattern in ('*', '*/*') or pattern == mimetype:
            return True
        if pattern.endswith('/*') and pattern[:-2] == major:
            return True
    return False


class _Transaction:
    __slots__ = ('chunk', 'callback', 'deadline')

    def __init__(self, chunk, callback, deadline):
        self.chunk = chunk
        self.callback = callback
        self.deadline = deadline


_END = object()
_MESSAGE = object()  # marks an OutgoingMessage in the outgoing queue
_WAKE = object()     # wakes the writer: a message it was holding back may send again


def _gets_success_response(chunk):
    # True if the peer answers request ``chunk`` even when all goes well (Failure-Report yes).
    if chunk.method is None or chunk.method == 'REPORT':
        return False
    try:
        return chunk.failure_report == 'yes'
    except HeaderParsingError:
        return True


class _ReaderGreenlet(Greenlet):
    # The reader of a session.  A kill is noted before it is delivered, so that the exception it raises
    # ends the session even where the reader catches exceptions of the application's callback.

    def __init__(self, session):
        Greenlet.__init__(self, session._reader)
        self.kill_requested = None  # the exception a kill asked for (class or instance), or None

    def kill(self, exception=gevent.GreenletExit, block=True, timeout=None):
        """``Greenlet.kill``, noting ``exception`` first: it ends the session wherever the reader is."""
        if self.kill_requested is None and not self.dead:
            self.kill_requested = exception
        return Greenlet.kill(self, exception, block, timeout)


@implementer(IMSRPSession)
class MSRPSession:
    """High-level MSRP over one bound transport.

    ``MSRPSession(msrptransport, accept_types=['*'], on_incoming_cb=None, automatic_reports=True)``:
    incoming chunks whose Content-Type matches ``accept_types`` are passed
    to ``on_incoming_cb(chunk)``; the end of the session to
    ``on_incoming_cb(error=failure)``.  With ``automatic_reports`` the
    Success-Reports peers ask for are sent on their own.

    Class attributes (overridable per instance): ``RESPONSE_TIMEOUT`` (30 s),
    ``SHUTDOWN_TIMEOUT`` (10 s: longest :meth:`shutdown` waits for the
    queue and responses), ``KEEPALIVE_INTERVAL`` (60 s of idleness before an
    empty SEND is sent; None or 0 disables), ``OUTGOING_QUEUE_SIZE`` (chunks
    queued for the writer before :meth:`send_chunk` blocks),
    ``MESSAGE_CHUNK_SIZE`` (64 KiB: chunk size of :meth:`send_large_message`),
    ``RELAY_CHUNK_SIZE`` (8 KiB: the chunk size instead when a relay is in
    the path, unless the relay's settings say otherwise), ``MESSAGE_WRITE_BYTES``
    (64 KiB: smaller chunks of a message go out several per write, up to this
    much body, while its windows have room and nothing else is queued),
    ``RELAY_WRITE_BYTES`` (24 KiB: the same limit through a relay), ``REPORT_WINDOW``
    (1 MiB: through a relay, bytes of a message sent ahead of the receiver's
    Success-Reports, at most), ``RELAY_START_WINDOW`` (8 KiB: through a relay, bytes
    of a message sent before the receiver's first Success-Report; a message
    larger than this is paced on the receiver's REPORTs, four report steps
    ahead of them after the first), ``RELAY_START_WAIT``
    (2 s: how long that start waits for the first Success-Report before the
    message goes on paced on ``REPORT_WINDOW`` alone, for receivers that
    report only whole messages; None: as long as it takes), ``SUCCESS_REPORT_TIMEOUT`` (30 s: longest a message
    waits for a Success-Report before it fails with 408),
    ``PROGRESS_REPORT_INTERVAL`` (256 KiB: while reassembling a message whose
    chunks ask for Success-Reports, a REPORT for the bytes received so far
    is sent after every such amount, and through a relay after the first
    chunk and then every time the bytes received double up to a quarter of
    ``RELAY_PATH_BYTES``; None or 0 disables), ``RELAY_PATH_BYTES`` (None:
    bytes the relay's connection to this end holds for sure, estimated
    from the socket -- :meth:`MSRPTransport.inbound_path_bytes`, 64 KiB
    when it cannot tell; set it for a relay with larger write queues).

    ``assembler`` (a :class:`msrplib.message.MessageAssembler`) turns on
    reassembly: incoming SEND chunks are collected into whole
    :class:`~msrplib.message.IncomingMessage` objects, which are what the
    callback then receives, with one Success-Report per message.

    Subclasses handle further methods with ``_handle_incoming_<METHOD>(self, chunk)``.
    """

    RESPONSE_TIMEOUT = 30
    READER_YIELD_BYTES = 262144
    MESSAGE_CHUNK_SIZE = 65536
    MESSAGE_WINDOW = 8
    RELAY_CHUNK_SIZE = 8192
    RELAY_MESSAGE_WINDOW = 64
    MESSAGE_WRITE_BYTES = 65536
    RELAY_WRITE_BYTES = 24576
    REPORT_WINDOW = 1024 * 1024
    RELAY_START_WINDOW = 8192
    RELAY_START_WAIT = 2
    RELAY_PATH_BYTES = None
    SUCCESS_REPORT_TIMEOUT = 30
    PROGRESS_REPORT_INTERVAL = 256 * 1024
    SHUTDOWN_TIMEOUT = 10
    KEEPALIVE_INTERVAL = 60
    OUTGOING_QUEUE_SIZE = 1000

    def __init__(self, msrptransport, accept_types=None, on_incoming_cb=None, automatic_reports=True,
                 assembler=None):
        if on_incoming_cb is not None and not callable(on_incoming_cb):
            raise TypeError('on_incoming_cb must be callable')
        self.msrp = msrptransport
        self.accept_types = list(accept_types) if accept_types is not None else ['*']
        self._on_incoming_cb = on_incoming_cb if on_incoming_cb is not None else self._ignore_incoming
        self.automatic_reports = automatic_reports
        self.state = SessionState.CONNECTED
        self.expected_responses = {}              # transaction id -> _Transaction
        self._deadlines = []                      # heap of (deadline, sequence, _Transaction)
        self._sequence = 0
        self._timer_due = float('inf')            # when the response timer fires next (inf: not armed)
        self._timer = None                        # the hub timer watcher of the response deadlines
        self._unsent = 0                          # chunks accepted by send_chunk, not yet written
        self._writer_idle = True                  # True while no writer greenlet has work (or none runs yet)
        self._sending_messages = collections.deque()  # OutgoingMessages the writer is sending
        self._outgoing_messages = {}              # Message-ID -> OutgoingMessage not finished yet
        self.assembler = assembler
        self._progress_reports = None             # Message-ID -> progress-report state (made when needed)
        self._checked_texts = None                # (header texts, _checks_key()) of a chunk that passed (_check_request)
        self._loop = gevent.get_hub().loop
        self._inline_iteration = None             # hub loop iteration of the last direct write
        self.outgoing = Queue(self.OUTGOING_QUEUE_SIZE)
        self._last_activity = time.monotonic()
        self._done = Event()
        self._failure = None
        self._reader_paused = False               # True while the reader is with the application: waiting for
                                                  # room (see _room) or in on_incoming_cb; it reads nothing then
        self._reader_pauses = 0                   # how many times it was
        self.reader_job = _ReaderGreenlet(self)
        self.reader_job.start()
        self.reader_job.link(self._reader_ended)  # also ends a session whose reader is killed before it runs
        # No other greenlet while idle (memory per session): the writer starts with the first queued
        # chunk, the response deadlines and the keep-alive are hub timers (see _schedule_timer,
        # _arm_keepalive) that spawn a greenlet only when there is work.
        self.writer_job = None
        self._keepalive_timer = None
        self._keepalive_job = None                # the greenlet sending a keep-alive, while it does

    # Set (gevent Event) while the application has room for more incoming chunks; None: no such limit (the
    # callback is called in the reader, so a callback that blocks holds the reader by itself).  The reader
    # waits for it before reading the next chunk from the connection: back-pressure, not buffering.
    _room = None

    @staticmethod
    def _ignore_incoming(chunk=None, error=None):
        pass

    @staticmethod
    def _ignore_response(response):
        pass

    @property
    def logger(self):
        """The transport's logger."""
        return self.msrp.logger

    @property
    def connected(self):
        """True while chunks can be sent."""
        return self.state == SessionState.CONNECTED

    # -- sending

    def send_chunk(self, chunk, response_cb=None):
        """Queue ``chunk`` for sending; report its transaction's response through ``response_cb``.

        ``response_cb(response)`` is called from the reader greenlet (it must
        not block) with the peer's response, or with a local one: after
        ``RESPONSE_TIMEOUT`` (or when the connection closes first), 408 if
        the chunk's Failure-Report is ``yes`` or absent, 200 if ``partial``
        or ``no``; 400 when the chunk cannot be encoded (a line break in a
        header value) and so was not sent.  Every chunk accepted gets exactly
        one of these, also when the session ends with it still queued.
        Raises :class:`MSRPSessionError` when the session no longer sends
        (then no callback follows), TypeError when ``response_cb`` is not
        callable.
        """
        if response_cb is not None and not callable(response_cb):
            raise TypeError('response_cb must be callable, not %r' % (response_cb,))
        if self.state != SessionState.CONNECTED:
            raise MSRPSessionError('Cannot send chunk because MSRPSession is %s' % self.state)
        if self._writer_idle and not self._unsent:
            # Nothing queued.  A chunk sent after the hub ran (e.g. after waiting for a response) goes
            # straight to the socket; chunks sent back to back go to the writer, which batches them.
            iteration = getattr(self._loop, 'iteration', None)
            if iteration is not None and iteration != self._inline_iteration:
                self._inline_iteration = iteration
                self._write_now(chunk, response_cb)
                return
        self._unsent += 1
        if self.writer_job is None:
            self._start_writer()
        try:
            self.outgoing.put((chunk, response_cb))
        except BaseException:
            self._unsent -= 1
            raise
        if self._failure is not None:
            # The session ended while this put waited for room, after _end() emptied the queue.
            self._fail_queued('Connection closed before the chunk was sent')

    def _write_now(self, chunk, response_cb):
        data = self._outgoing_bytes(chunk, response_cb)
        if data is None:
            return
        self._last_activity = time.monotonic()
        try:
            self.msrp.write(data, sync=False)
        except ConnectionClosed:
            pass  # the reader sees the closure, ends the session and fails the transaction

    def _outgoing_bytes(self, chunk, response_cb):
        # Encode a chunk about to be written and expect its response; None if it cannot be encoded.
        parts = self._outgoing_parts(chunk, response_cb)
        return None if parts is None else b''.join(parts)

    def _outgoing_parts(self, chunk, response_cb):
        # _outgoing_bytes() as (head, body, end-line): the writer sends them without joining them.
        try:
            data = chunk._encode_parts()  # first: encoding may pick a new transaction id
        except (MSRPError, ValueError, TypeError) as e:  # e.g. a line break in a header value
            self._refuse_unencodable(chunk, response_cb, e)
            return None
        if response_cb is None and _gets_success_response(chunk):
            response_cb = self._ignore_response  # so that shutdown() waits for it too
        if response_cb is not None:
            self._expect_response(chunk, response_cb)
        if wants_chunks(self.msrp.logger):
            self.msrp._log_sent(chunk)  # (a logger that raises is logged and ignored)
        return data

    def deliver_chunk(self, chunk, event=None):
        """Send ``chunk`` and wait for its response.

        Returns the response when it is a success (2xx); raises
        :class:`~msrplib.transport.MSRPTransactionError` (``code``,
        ``comment``) otherwise.  Returns None at once when the chunk's
        Failure-Report is ``no`` (no response is coming).  ``event``, if
        given, is an object with ``set``/``get`` (``gevent.event.AsyncResult``)
        or ``send``/``wait`` that receives the response.
        """
        try:
            failure_report = chunk.failure_report
        except HeaderParsingError:
            failure_report = 'yes'
        if failure_report == 'no':
            self.send_chunk(chunk)
            return None
        if event is None:
            event = AsyncResult()
        if hasattr(event, 'set') and hasattr(event, 'get'):
            self.send_chunk(chunk, event.set)
            response = event.get()
        else:
            self.send_chunk(chunk, event.send)
            response = event.wait()
        if response.code is not None and 200 <= response.code <= 299:
            return response
        raise MSRPTransactionError(comment=response.comment, code=response.code)

    def make_message(self, msg, content_type, message_id=None):
        """A SEND chunk carrying all of ``msg`` (bytes or str) with ``content_type``."""
        chunk = self.msrp.make_send_request(message_id=message_id, data=msg)
        chunk.add_header(ContentTypeHeader(content_type))
        return chunk

    def send_message(self, msg, content_type):
        """Queue ``msg`` as one SEND chunk; returns the chunk."""
        chunk = self.make_message(msg, content_type)
        self.send_chunk(chunk)
        return chunk

    def deliver_message(self, msg, content_type):
        """Send ``msg`` as one SEND chunk and wait for its response (see :meth:`deliver_chunk`)."""
        chunk = self.make_message(msg, content_type)
        return self.deliver_chunk(chunk)

    def send_large_message(self, source, content_type, message_id=None, chunk_size=None, success_report=False,
                           progress_cb=None, headers=None, failure_report='yes', window=None):
        """Send a message of any size as chunks; return its :class:`~msrplib.message.OutgoingMessage`.

        ``source`` is bytes (or str) or a binary file object, read as the
        chunks go out.  Chunks are ``chunk_size`` bytes (default
        ``MESSAGE_CHUNK_SIZE``; when a relay is in the path, on either
        side, the relay settings' ``chunk_size`` or ``RELAY_CHUNK_SIZE``)
        with one Message-ID and their Byte-Ranges; anything sent meanwhile
        goes out between them.  ``success_report`` asks the receiver for
        REPORTs, and the message counts as delivered only once they cover
        it; through a relay a message larger than ``RELAY_START_WINDOW``
        always does, and is paced on those REPORTs: at most
        ``RELAY_START_WINDOW`` bytes until the first one (or for
        ``RELAY_START_WAIT`` seconds), then four times the bytes the last
        one newly confirmed, at most ``REPORT_WINDOW``, beyond what they
        confirm (see
        :class:`~msrplib.message.OutgoingMessage` ``report_window`` and
        ``start_window``; doc/relay.md says why).  A
        message waiting for REPORTs fails with 408 when none comes within
        ``SUCCESS_REPORT_TIMEOUT`` seconds.  ``progress_cb(message)`` sees
        ``message.bytes_acknowledged`` grow; ``message.wait()`` returns when
        it is delivered and raises MSRPTransactionError when it failed (a
        413 stops it).  ``headers``: extra headers for every chunk (header
        objects or (name, value) pairs).  ``window``: chunks awaiting their
        response at most (default ``MESSAGE_WINDOW``).  Raises
        :class:`MSRPSessionError` when the session no longer sends.
        """
        from msrplib.message import OutgoingMessage
        if self.state != SessionState.CONNECTED:
            raise MSRPSessionError('Cannot send a message because MSRPSession is %s' % self.state)
        relayed = self.relayed
        if relayed:
            chunk_size = chunk_size or getattr(self.msrp, 'relay_chunk_size', None) or self.RELAY_CHUNK_SIZE
            window = window or self.RELAY_MESSAGE_WINDOW
        message = OutgoingMessage(source, content_type, message_id=message_id,
                                  chunk_size=chunk_size or self.MESSAGE_CHUNK_SIZE, success_report=success_report,
                                  failure_report=failure_report, progress_cb=progress_cb, headers=headers,
                                  window=window or self.MESSAGE_WINDOW, report_timeout=self.SUCCESS_REPORT_TIMEOUT,
                                  relayed=relayed)
        start = self.RELAY_START_WINDOW
        if relayed and self.REPORT_WINDOW and (message.size is None or message.size > (start or self.REPORT_WINDOW)):
            # A relay's 200 says nothing: pace on the receiver's REPORTs.  Until the first one, one chunk: a relay
            # opening its onward connection (Kamailio: a new one to the next relay, or to itself when both ends
            # use it) queues every frame for it meanwhile, 32 KiB at most by default (64 KiB for TLS), and drops
            # the connection when more comes; the first REPORT shows that connection carries the frames.
            message.report_window = self.REPORT_WINDOW
            message.start_window = start or None
            message.start_wait = self.RELAY_START_WAIT
        self._outgoing_messages[message.message_id] = message
        message.outcome.rawlink(lambda _: self._outgoing_messages.pop(message.message_id, None))
        self._unsent += 1
        if self.writer_job is None:
            self._start_writer()
        self.outgoing.put((message, _MESSAGE))
        return message

    @property
    def relayed(self):
        """True when a relay is in the path (this side's or the peer's): the transport's paths have one."""
        return bool(getattr(self.msrp, 'local_path', None) or getattr(self.msrp, 'remote_path', None))

    def send_file(self, file, content_type=None, chunk_size=None, success_report=False, progress_cb=None,
                  name=None):
        """Send a file (a path, or a binary file object) as a message; return its OutgoingMessage.

        The file is streamed, never loaded whole.  Its description
        (RFC 5547 file-selector: name, type, size, sha-1 hash) is in
        ``message.file_selector`` (for SDP ``a=file-selector``) and in the
        chunks' ``File-Selector`` header; Content-Disposition is
        ``attachment`` with the file name.  A file opened here is closed
        when the message ends.
        """
        from msrplib.sdp import FileSelector
        own_file = not hasattr(file, 'read')
        handle = open(file, 'rb') if own_file else file
        try:
            if name is None:
                name = os.path.basename(file if own_file else getattr(handle, 'name', 'file'))
            selector = FileSelector.from_file(handle, name=name, type=content_type)
            content_type = content_type or selector.type or 'application/octet-stream'
            headers = [ContentDispositionHeader(decoded=('attachment', {'filename': name, 'size': selector.size})),
                       MSRPHeader('File-Selector', str(selector))]
            message = self.send_large_message(handle, content_type, chunk_size=chunk_size,
                                              success_report=success_report, progress_cb=progress_cb,
                                              headers=headers)
        except BaseException:
            if own_file:
                handle.close()
            raise
        message.file_selector = selector
        if own_file:
            message.outcome.rawlink(lambda _: handle.close())
        return message

    def send_report(self, chunk, code, reason):
        """Send a REPORT about incoming SEND ``chunk`` with status ``code``/``reason``.

        Nothing is sent when the chunk's report headers ask for no such report.
        """
        if chunk.method != 'SEND':
            raise ValueError('reports are sent only for SEND chunks')
        report = make_report(chunk, code, reason)
        if report is not None:
            self.send_chunk(report)

    def respond(self, chunk, code, comment):
        """Answer incoming request ``chunk`` (e.g. a NICKNAME) with ``code``/``comment``."""
        self.msrp.write_response(chunk, code, comment, wait=False)

    # -- the writer

    def _start_writer(self):
        if self._failure is None:
            self.writer_job = gevent.spawn(self._writer)

    def _write_buffers(self, buffers):
        # The transport's write_buffers() (vectored, bodies not copied); a join for a transport without it.
        write_buffers = getattr(self.msrp, 'write_buffers', None)
        if write_buffers is not None:
            write_buffers(buffers)
        else:
            self.msrp.write(b''.join(buffers))

    def _writer(self):
        write_buffers = self._write_buffers
        outgoing = self.outgoing
        messages = self._sending_messages  # OutgoingMessages, sent one chunk per turn, round robin
        while True:
            if messages and outgoing.empty():
                message = self._next_ready_message(messages)
                if message is not None:
                    if not self._write_message_chunk(message, messages):
                        return
                    continue
            self._writer_idle = not messages
            self._note_progress()  # all written that could be: shutdown() may be waiting for this
            try:
                batch = [outgoing.get()]
            finally:
                self._writer_idle = False
            while len(batch) < 64 and not outgoing.empty():  # one write for what is queued already
                batch.append(outgoing.get_nowait())
            chunks = []
            for item in batch:
                if item[1] is _MESSAGE:
                    item[0]._wake = self._wake_writer
                    messages.append(item[0])
                    self._unsent -= 1
                elif item[1] is _WAKE:
                    self._unsent -= 1
                else:
                    chunks.append(item)
            if not chunks:
                continue
            try:
                buffers = []
                for chunk, response_cb in chunks:
                    parts = self._outgoing_parts(chunk, response_cb)
                    if parts is not None:
                        buffers += parts
                if not buffers:
                    continue
                self._last_activity = time.monotonic()
                write_buffers(buffers)  # bodies are not copied: one vectored write (joined for TLS)
            except ConnectionClosed:
                return  # the reader sees the closure and ends the session
            finally:
                self._unsent -= len(chunks)

    @staticmethod
    def _next_ready_message(messages):
        # The first message that may send a chunk now (its window has room), moved to the front; or None.
        for _ in range(len(messages)):
            message = messages[0]
            if not message.wants_writer:
                messages.popleft()
            elif message.ready:
                return message
            else:
                messages.rotate(-1)
        return None

    def _wake_writer(self):
        if self._writer_idle is False and not self.outgoing.empty():
            return  # the writer looks at its messages again after the queued items anyway
        try:
            self._unsent += 1
            self.outgoing.put_nowait((None, _WAKE))
        except Full:
            self._unsent -= 1

    def _write_message_chunk(self, message, messages):
        # Send the next chunks of ``message`` (first in ``messages``) and move it to the back; False once closed.
        # Small chunks (through a relay) go out several per write, up to MESSAGE_WRITE_BYTES of body, while the
        # message's windows have room and nothing else is queued: one syscall (and one wake-up of the next hop)
        # for several chunks.  A chunk of MESSAGE_WRITE_BYTES or more (64 KiB on direct paths) goes alone.
        # Through a relay a write carries at most RELAY_WRITE_BYTES (three 8 KiB chunks): a burst that
        # Kamailio's default per-connection write queue (tcp_conn_wq_max, 32 KiB) holds whole when the next
        # hop's socket is not writable at that moment (beyond it Kamailio drops frames and resets the connection).
        messages.popleft()
        buffers = []
        size = 0
        outgoing = self.outgoing
        limit = self.RELAY_WRITE_BYTES if message.relayed else self.MESSAGE_WRITE_BYTES
        try:
            while True:
                chunk = message.next_chunk(self.msrp)
                if chunk is None:
                    break
                callback = message.response_callback(chunk) if chunk.contflag != '#' else None
                parts = self._outgoing_parts(chunk, callback)
                if parts is None:
                    break  # cannot be encoded: the message's callback got a local 400
                buffers += parts
                size += len(chunk.data)
                if size >= limit or not message.ready or not outgoing.empty():
                    break
        finally:
            if message.wants_writer:
                messages.append(message)
        if not buffers:
            return True
        try:
            self._last_activity = time.monotonic()
            self._write_buffers(buffers)
        except ConnectionClosed:
            return False
        gevent.sleep(0)  # let other greenlets queue chat lines and reports before the next chunks
        return True

    def _expect_response(self, chunk, response_cb):
        transaction = _Transaction(chunk, response_cb, time.monotonic() + self.RESPONSE_TIMEOUT)
        self.expected_responses[chunk.transaction_id] = transaction
        self._sequence += 1
        heapq.heappush(self._deadlines, (transaction.deadline, self._sequence, transaction))
        if transaction.deadline < self._timer_due:
            self._schedule_timer(transaction.deadline)  # the timer is later than this deadline (or off)

    def _finish_transaction(self, transaction):
        # A transaction got its response: forget it, and drop finished ones from the head of the heap.
        transaction.chunk = None
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].chunk is None:
            heapq.heappop(deadlines)

    def _schedule_timer(self, due):
        # (Re)arm the hub timer of the response deadlines for ``due`` (time.monotonic()).
        if self._failure is not None:
            return
        if self._timer is not None:
            self._timer.close()
        self._timer_due = due
        self._timer = self._loop.timer(max(due - time.monotonic(), 0.0))
        self._timer.start(self._timer_fired)

    def _timer_fired(self):
        # In the hub: drop answered transactions; a greenlet handles expired ones (callbacks may block).
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._timer_due = float('inf')
        if self._failure is not None:
            return
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].chunk is None:
            heapq.heappop(deadlines)
        if not deadlines:
            return
        if deadlines[0][0] > time.monotonic():
            self._schedule_timer(deadlines[0][0])
        else:
            gevent.spawn(self._expire_transactions)

    def _expire_transactions(self):
        deadlines = self._deadlines
        now = time.monotonic()
        while deadlines and self._failure is None:
            if deadlines[0][2].chunk is None:
                heapq.heappop(deadlines)
                continue
            if deadlines[0][0] > now:
                if deadlines[0][0] < self._timer_due:
                    self._schedule_timer(deadlines[0][0])
                return
            transaction = heapq.heappop(deadlines)[2]
            if self.expected_responses.get(transaction.chunk.transaction_id) is transaction:
                del self.expected_responses[transaction.chunk.transaction_id]
                self._local_response(transaction, 'Request Timeout')
                self._note_progress()

    def _local_response(self, transaction, comment):
        chunk = transaction.chunk
        try:
            failure_report = chunk.failure_report
        except HeaderParsingError:
            failure_report = 'yes'
        code = 408 if failure_report == 'yes' else 200
        if code == 200:
            comment = 'OK (no response expected)'
        response = MSRPData(chunk.transaction_id, code=code, comment=comment)
        try:
            response.add_header(ToPathHeader(decoded=chunk.from_path))
            response.add_header(FromPathHeader(decoded=chunk.to_path[:1]))
        except (HeaderParsingError, TypeError):
            pass
        self._call_response_cb(transaction.callback, response)

    def _call_response_cb(self, callback, response):
        try:
            callback(response)
        except Exception:
            self.logger.exception('response_cb %r raised' % (callback,))

    # -- the reader

    def _reader(self):
        reason = None
        tb = None
        try:
            if self.KEEPALIVE_INTERVAL and self._failure is None:  # read here: may be set on the instance
                self._arm_keepalive(self.KEEPALIVE_INTERVAL)
            read_chunk = self.msrp.read_chunk
            room = self._room
            unyielded = 0  # body bytes handled since the reader last let other greenlets run
            while True:
                if room is not None and not room.is_set():
                    self._wait_for_room(room)
                    if self.reader_job.kill_requested is not None:  # (the kill may land after the wake-up)
                        raise self._kill_reason(self.reader_job.kill_requested)
                chunk = read_chunk()
                if chunk is None:
                    continue  # unintelligible input: the transport closed; the next read raises why
                self._last_activity = time.monotonic()
                if chunk.method is None:
                    self._handle_response(chunk)
                else:
                    self._handle_request(chunk)
                    unyielded += len(chunk.data)
                    if unyielded >= self.READER_YIELD_BYTES:
                        # While the peer keeps the socket full, reads never block: let the application
                        # (and other sessions) run, so that what this reader hands out is taken in step
                        # instead of piling up in memory.
                        unyielded = 0
                        gevent.sleep(0)
        except gevent.GreenletExit:
            reason = ConnectionDone()
        except BaseException as e:
            reason = e
            tb = sys.exc_info()[2]
        finally:
            self._end(Failure(reason, tb))

    def _wait_for_room(self, room):
        # The application is behind: stop reading (TCP flow control then holds the peer) until it catches up.
        self._reader_paused = True
        self._reader_pauses += 1
        try:
            room.wait()
        finally:
            self._reader_paused = False

    def _reader_ended(self, job):
        if self._failure is None:
            reason = job.exception if job.exception is not None else ConnectionDone()
            self._end(Failure(reason))

    def _handle_response(self, chunk):
        transaction = self.expected_responses.pop(chunk.transaction_id, None)
        if transaction is None:
            self.logger.debug('Ignoring a response to unknown transaction %s' % chunk.transaction_id)
            return
        if transaction.deadline <= time.monotonic():
            # Too late: the local timeout response stands, whether or not the timer got to it first
            # (so RESPONSE_TIMEOUT = 0 gives the local one every time, however fast the peer).
            self._local_response(transaction, 'Request Timeout')
            self._finish_transaction(transaction)
        else:
            self._finish_transaction(transaction)
            self._call_response_cb(transaction.callback, chunk)
        self._note_progress()

    def _answer(self, chunk, code, comment):
        # The reader's response to a request.  A connection that failed on a write still hands out what the
        # peer sent before (its last chunk may be the '#' of an abort): the answer is then dropped, and the
        # reader's next read raises the closure.
        try:
            self.msrp.write_response(chunk, code, comment, wait=False)
        except ConnectionClosed:
            pass

    def _handle_request(self, chunk):
        method = chunk.method
        if method == 'SEND':
            handler = self._handle_incoming_SEND  # (a subclass's own, if it has one)
        else:
            handler = getattr(self, '_handle_incoming_%s' % method, None)
        if handler is None:
            self._answer(chunk, 501, 'Unknown method')
            return
        handler(chunk)

    def _deliver(self, chunk):
        # While the callback runs it has the reader: nothing is read (a callback that blocks holds the peer
        # back), so a keep-alive would go unread too (see _keepalive_due).
        self._reader_paused = True
        self._reader_pauses += 1
        try:
            self._on_incoming_cb(chunk)
        except Exception:
            if self.reader_job.kill_requested is not None and gevent.getcurrent() is self.reader_job:
                raise  # the reader was killed while in the callback: that ends the session
            self.logger.exception('on_incoming_cb raised')
        else:
            if self.reader_job.kill_requested is not None and gevent.getcurrent() is self.reader_job:
                # the callback caught the kill: end the session all the same
                raise self._kill_reason(self.reader_job.kill_requested)
        finally:
            self._reader_paused = False

    @staticmethod
    def _kill_reason(exception):
        if isinstance(exception, type):
            exception = exception()
        return exception

    def _check_request(self, chunk):
        # The answer due to a request with bad paths or headers (an error), or None.
        # The chunks of a large message repeat their header texts but for Byte-Range: once a parsed chunk with
        # more to follow passed, another whose texts are the same (the paths checked against the same transport
        # paths) passes too, checking its Byte-Range only (the outcome is a function of those texts).
        raw = chunk._raw
        texts = None
        if raw is not None and type(chunk) is MSRPData and chunk.method == 'SEND' and \
                (self._checked_texts is not None or chunk.contflag == '+'):
            texts = raw.copy()
            if 'Byte-Range' in texts:
                texts['Byte-Range'] = None
            checked = self._checked_texts
            if checked is not None and checked[0] == texts and checked[1] == self._checks_key():
                try:
                    chunk.byte_range
                except HeaderParsingError as e:
                    return MSRPTransactionError(str(e), 400)
                return None
        error = self.msrp.check_incoming_SEND_chunk(chunk)
        if error is not None:
            return error
        try:
            chunk.verify_headers()
        except HeaderParsingError as e:
            return MSRPTransactionError(str(e), 400)
        if texts is not None and chunk.contflag == '+':
            key = self._checks_key()
            # (only texts: a header the parser made an object of is not compared by its text)
            if key is not None and all(type(value) is str for value in texts.values() if value is not None):
                self._checked_texts = (texts, key)
        return None

    def _checks_key(self):
        # What the path checks of the transport compare the paths with (None: a transport whose checks are its own).
        msrp = self.msrp
        if type(msrp).check_incoming_SEND_chunk is not MSRPTransport.check_incoming_SEND_chunk:
            return None
        return msrp, msrp._path_key()

    def _handle_incoming_SEND(self, chunk):
        error = self._check_request(chunk)
        if error is None and chunk.message_id is None:
            error = MSRPTransactionError('Message-ID is required', 400)
        if error is None:
            content_type = chunk.content_type
            if content_type is None:
                if chunk.data:
                    error = MSRPTransactionError('Content-Type is required with a body', 400)
                elif chunk.contflag == '$':
                    self._answer(chunk, 200, 'OK')  # an empty SEND: keep-alive or bind
                    return
            elif not contains_mime_type(self.accept_types, content_type):
                error = MSRPTransactionError('Unsupported media type', 415)
        if error is not None:
            self._answer(chunk, error.code, error.comment)
            return
        if self.assembler is not None:
            self._assemble(chunk)
            return
        self._answer(chunk, 200, 'OK')
        self._deliver(chunk)  # first: queueing the report may wait for the socket
        if self.automatic_reports and chunk.success_report == 'yes' and chunk.contflag != '#':
            report = make_report(chunk, 200, 'OK')
            if report is not None:
                self._queue_internal(report)

    def _assemble(self, chunk):
        code, comment, message = self.assembler.accept(chunk)
        self._answer(chunk, code, comment)
        if message is None:
            self._progress_report(chunk, code)
            return
        if self._progress_reports:
            self._progress_reports.pop(message.message_id, None)  # the message's own REPORT covers it all
        self._deliver(message)  # first: queueing the report may wait for the socket
        if self.automatic_reports and message.success_report:
            report = make_report(chunk, 200, 'OK')
            if report is not None:  # one REPORT for the whole message
                report.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(1, message.size, message.size))
                self._send_report(report)

    def _progress_report(self, chunk, code):
        # RFC 4975 §7.1.2: a receiver may report on parts of a message.  While a message whose chunks ask for
        # Success-Reports is reassembled, report the bytes received every PROGRESS_REPORT_INTERVAL, so that a
        # sender behind a relay can pace itself on them.  The chunk that completes the message is left to the
        # message's own REPORT (sent after the application accepted it, e.g. checked a file's hash).
        interval = self.PROGRESS_REPORT_INTERVAL
        reports = self._progress_reports
        try:
            message_id = chunk.message_id
            wanted = interval and code == 200 and chunk.contflag == '+' and chunk.success_report == 'yes'
            byte_range = chunk.byte_range if wanted else None
        except HeaderParsingError:
            return
        if not wanted or byte_range is None or not chunk.data:
            if reports:
                reports.pop(message_id, None)
            return
        if reports is None:
            reports = self._progress_reports = collections.OrderedDict()
        start, end = byte_range.start, byte_range.start + len(chunk.data) - 1
        # per message: [bytes reported (from the first), last byte received, bytes to report at once, last step]
        pending = reports.get(message_id)
        if pending is not None and pending[1] + 1 != start:
            if pending[1] > pending[0]:
                self._send_progress_report(chunk, pending[0] + 1, pending[1])  # out of order: what was contiguous
            pending = None
        if pending is None:
            pending = reports[message_id] = [start - 1, end, interval, 0]
            while len(reports) > 1024:
                reports.popitem(last=False)
            if self.relayed:
                if start == 1:
                    # Through a relay the sender sends at most RELAY_START_WINDOW until this first REPORT (it
                    # shows the relays' onward connections carry the message).
                    self._send_progress_report(chunk, 1, end)
                    pending[0] = pending[3] = end
                pending[2] = self._relayed_report_step(interval, pending[0], pending[3])
        else:
            pending[1] = end
        step = pending[1] - pending[0]
        if step >= pending[2]:
            self._send_progress_report(chunk, pending[0] + 1, pending[1])
            pending[0] = pending[1]
            if self.relayed:
                pending[2] = self._relayed_report_step(interval, pending[0], step)
                pending[3] = step

    def _relayed_report_step(self, interval, reported, last_step):
        # Through a relay the sender keeps at most REPORT_STEPS_IN_FLIGHT times the last step beyond what the
        # REPORTs confirmed (see OutgoingMessage), so the steps set its window: no larger than what the last hop
        # holds for sure (the relay drops frames beyond that), and growing from the first chunk on -- each step at
        # most all the bytes reported before and twice the last step, like TCP's slow start, for the relays'
        # onward connections, whose buffers grow with use.  Never more than twice the last step: the sender's
        # window (four last steps) must let the next step's bytes through.  Messages received at the same time share
        # the path: each gets its part.
        capacity = self.RELAY_PATH_BYTES
        if capacity is None:
            inbound = getattr(self.msrp, 'inbound_path_bytes', None)
            capacity = (inbound() if inbound is not None else None) or _UNKNOWN_PATH_BYTES
        sharing = len(self._progress_reports or ()) or 1
        step = min(interval, capacity // (REPORT_STEPS_IN_FLIGHT * sharing))
        if reported:
            step = min(step, reported)
        if last_step:
            step = min(step, 2 * last_step)
        return max(1, step)

    def _send_progress_report(self, chunk, first, last):
        report = make_report(chunk, 200, 'OK')
        if report is not None:
            report.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(first, last, chunk.byte_range.total))
            self._send_report(report)

    def _send_report(self, report):
        # A REPORT the reader makes about a message it reassembles.  When the writer has nothing queued (the usual
        # case while receiving) it is written from here at once, with the responses held back so far: the reader
        # lets the writer run only when it yields (every READER_YIELD_BYTES while input keeps coming), and a
        # sender behind a relay paces itself on these REPORTs.  Otherwise it is queued behind what is there.
        write_promptly = getattr(self.msrp, '_write_promptly', None)
        if write_promptly is None or not self._writer_idle or self._unsent or self._failure is not None:
            self._queue_internal(report)
            return
        data = self._outgoing_bytes(report, None)
        if data is None:
            return
        self._last_activity = time.monotonic()
        try:
            write_promptly(data)
        except ConnectionClosed:
            pass  # the reader sees the closure

    def _handle_incoming_REPORT(self, chunk):
        if self._check_request(chunk) is None:
            message = self._outgoing_messages.get(chunk.message_id)
            if message is not None:
                message.handle_report(chunk)  # a REPORT about a message sent with send_large_message()
                return
            self._deliver(chunk)
        else:
            self.logger.debug('Ignoring a REPORT with bad paths or headers')

    def _handle_incoming_NICKNAME(self, chunk):
        error = self._check_request(chunk)
        if error is None and 'Use-Nickname' not in chunk.headers:
            error = MSRPTransactionError('Use-Nickname is required', 400)
        if error is None and ('Success-Report' in chunk.headers or 'Failure-Report' in chunk.headers):
            error = MSRPTransactionError('NICKNAME takes no report headers', 400)
        if error is not None:
            self._answer(chunk, error.code, error.comment)
            return
        self._deliver(chunk)  # the application answers, e.g. with respond(chunk, 200, 'OK') or 425

    def _queue_internal(self, chunk):
        try:
            self._unsent += 1
            if self.writer_job is None:
                self._start_writer()
            self.outgoing.put_nowait((chunk, None))
        except Full:
            self._unsent -= 1
            self.msrp.write_chunk(chunk, wait=False)

    # -- keep-alive

    def _arm_keepalive(self, delay):
        # Check for idleness in ``delay`` seconds (a hub timer, no greenlet while idle).
        if self._keepalive_timer is not None:
            self._keepalive_timer.close()
        self._keepalive_timer = self._loop.timer(delay)
        self._keepalive_timer.start(self._keepalive_due)

    def _keepalive_due(self):
        # In the hub: re-arm while there was traffic; send a keep-alive (from a greenlet) after an idle interval.
        if self._keepalive_timer is not None:
            self._keepalive_timer.close()
            self._keepalive_timer = None
        interval = self.KEEPALIVE_INTERVAL
        if not interval or self.state != SessionState.CONNECTED:
            return  # disabled on the instance after the session started, or ending
        idle = time.monotonic() - self._last_activity
        if self._reader_paused:
            # We do not read (the application is behind): the session is not idle, and the peer's answer
            # to a keep-alive would wait unread behind what we hold back.  Check again later.
            self._arm_keepalive(interval)
        elif idle < interval:
            self._arm_keepalive(interval - idle)
        else:
            self._keepalive_job = gevent.spawn(self._send_keepalive)

    def _send_keepalive(self):
        chunk = self.msrp.make_send_request()
        self._last_activity = time.monotonic()
        pauses = self._reader_pauses
        try:
            self.send_chunk(chunk, lambda response: self._keepalive_response(response, pauses))
        except MSRPSessionError:
            return
        interval = self.KEEPALIVE_INTERVAL
        if interval and self._failure is None:
            self._arm_keepalive(interval)

    def _keepalive_response(self, response, pauses=None):
        if response.code == 408:
            waited = self._reader_paused or (pauses is not None and pauses != self._reader_pauses)
            if waited and self._failure is None:
                # the reader stopped reading meanwhile (the application was behind): the answer may be
                # waiting unread on our side; a later keep-alive checks the connection again
                self.logger.debug('Keep-alive unanswered while the reader waited for the application')
                return
            self.logger.warning('Keep-alive got no response: closing the session')
            gevent.spawn(self._abort, ConnectionLost('No response to keep-alive'))

    def _abort(self, reason):
        if self.reader_job is not None and not self.reader_job.dead:
            self.reader_job.kill(reason, block=False)

    # -- the end

    def shutdown(self, sync=True, wait=None):
        """Send what is queued, wait for outstanding responses (up to ``SHUTDOWN_TIMEOUT``), then close.

        Only responses that will come are waited for: none for a chunk whose
        Failure-Report is ``no``, nor for one with ``partial`` (it gets a
        response only on failure), nor for a REPORT.  Their callbacks get
        the local response of a closed session (200 for ``no`` and
        ``partial``).  With ``sync`` (alias ``wait``) true, return when the
        session is over; otherwise do it in the background.
        """
        if wait is not None:
            sync = wait
        if self.state == SessionState.CONNECTED:
            self.state = SessionState.FLUSHING
            self._progress = Event()
            self._done.rawlink(lambda _: self._progress.set())
            job = gevent.spawn(self._shutdown)
        else:
            job = None
        if sync:
            if job is not None:
                job.join()
            self._done.wait()

    # set by shutdown(): an Event that _note_progress() sets whenever something _flushed() looks at may
    # have changed (a chunk written, a response in or timed out, the session ended)
    _progress = None

    def _note_progress(self):
        progress = self._progress
        if progress is not None:
            progress.set()

    def _flushed(self):
        # True when shutdown() has nothing left to wait for: no chunk or message to write, no response
        # that will come (none comes for Failure-Report no or partial when all goes well, nor for REPORTs).
        if self._unsent or self._sending_messages:
            return False
        for transaction in self.expected_responses.values():
            if _gets_success_response(transaction.chunk):
                return False
        return True

    def _shutdown(self):
        progress = self._progress
        with gevent.Timeout(self.SHUTDOWN_TIMEOUT, False):
            while not self._done.is_set() and not self._flushed():
                progress.clear()
                progress.wait()
        if self.state == SessionState.FLUSHING:
            self.state = SessionState.CLOSING
        self.msrp.loseConnection(wait=False)

    def _fail_queued(self, comment):
        # Give the chunks still queued for the writer a local response (the session has ended).
        while not self.outgoing.empty():
            chunk, response_cb = self.outgoing.get_nowait()
            self._unsent -= 1
            if response_cb is _MESSAGE or response_cb is _WAKE:
                continue  # messages are failed through _outgoing_messages
            if response_cb is not None:
                self._local_response(_Transaction(chunk, response_cb, 0), comment)

    def _refuse_unencodable(self, chunk, response_cb, error):
        # A chunk that cannot be put on the wire: its outcome is a local 400 (nothing was sent).
        self.logger.error('Cannot send chunk %s: %s' % (chunk.transaction_id, error))
        if response_cb is None:
            return
        response = MSRPData(chunk.transaction_id, code=400, comment='Not sent: %s' % (error,))
        self._call_response_cb(response_cb, response)

    def _end(self, failure):
        if self._failure is not None:
            return
        self._failure = failure
        self.state = SessionState.CLOSING
        self.msrp.loseConnection(wait=False)
        current = gevent.getcurrent()
        for job in (self.writer_job, self._keepalive_job):
            if job is not None and job is not current:
                job.kill(block=False)
        for timer in (self._timer, self._keepalive_timer):
            if timer is not None:
                timer.close()
        self._timer = self._keepalive_timer = None
        self._timer_due = float('inf')
        comment = 'Connection closed before a response arrived'
        pending = list(self.expected_responses.values())
        self.expected_responses.clear()
        self._deadlines.clear()
        for transaction in pending:
            self._local_response(transaction, comment)
        self._fail_queued(comment)
        self._sending_messages.clear()
        for message in list(self._outgoing_messages.values()):
            message.session_ended(failure.getErrorMessage())
        self._outgoing_messages.clear()
        if self.assembler is not None:
            self.assembler.clear()
        self.state = SessionState.DONE
        self._done.set()
        try:
            self._on_incoming_cb(error=failure)
        except Exception:
            self.logger.exception('on_incoming_cb raised')


def _incoming_cost(item):
    # The memory an item of the incoming queue holds, estimated from above (see MSRPData.memory_estimate).
    estimate = getattr(item, 'memory_estimate', None)
    if estimate is not None:
        return estimate()
    chunk = getattr(item, 'chunk', None)  # e.g. an IncomingMessage: its first chunk and its body
    cost = chunk.memory_estimate() if hasattr(chunk, 'memory_estimate') else 1024
    if getattr(item, 'file', None) is None:
        size = getattr(item, 'size', 0)
        cost += size if type(size) is int else 0
    return cost


@implementer(IGreenMSRPSession)
class GreenMSRPSession(MSRPSession):
    """An :class:`MSRPSession` that puts incoming chunks into a queue (``incoming``).

    ``GreenMSRPSession(msrptransport, accept_types=['*'], automatic_reports=True)``.
    :meth:`receive_chunk` returns the next chunk; once the session has ended
    and the queue is empty it raises the reason (every time).

    Back-pressure, not buffering: once the queue holds ``INCOMING_QUEUE_SIZE``
    chunks or ``INCOMING_BUFFER_SIZE`` bytes (the estimated memory of the
    chunks, headers and parsed paths included: see
    :meth:`~msrplib.protocol.MSRPData.memory_estimate`), the reader stops
    reading from the connection until the application takes some; TCP flow
    control then holds the peer.  A chunk answered 200 is always in the
    queue: nothing accepted is ever dropped.  The queue thus holds at most
    ``INCOMING_BUFFER_SIZE`` plus one chunk (at most the transport's
    ``max_chunk_size``).
    """

    INCOMING_QUEUE_SIZE = 1000
    INCOMING_BUFFER_SIZE = 4 * 1024 * 1024

    # How the queue is accounted.  ``incoming`` is a plain gevent Queue (a subclass would slow every put and
    # get down); ``_costs`` holds the cost of each item in queue order and ``_buffered`` their sum.
    # receive_chunk() drops the cost of what it takes; items taken straight from ``incoming`` are found by
    # _settle() (the queue is shorter than ``_costs``: the oldest costs are theirs).  The reader waits on
    # ``_room`` before reading a chunk while a limit is reached (``_held``).

    def __init__(self, msrptransport, accept_types=None, automatic_reports=True, on_incoming_cb=None,
                 assembler=None):
        self.incoming = Queue()
        self._room = Event()
        self._room.set()
        self._held = False
        self._costs = collections.deque()
        self._buffered = 0
        self._max_items = self.INCOMING_QUEUE_SIZE
        self._max_bytes = self.INCOMING_BUFFER_SIZE
        self._end_failure = None
        self._receivers = 0  # receive_chunk() calls waiting for a chunk
        MSRPSession.__init__(self, msrptransport, accept_types, on_incoming_cb=self._put_incoming,
                             automatic_reports=automatic_reports, assembler=assembler)

    def _put_incoming(self, chunk=None, error=None):
        queue = self.incoming.queue
        if error is not None:
            self._end_failure = error
            cost = 0
        elif self._receivers > len(queue):
            cost = 0  # a waiting receive_chunk() takes it next: it is the application's already
        elif type(chunk) is MSRPData:
            cost = chunk._verified_size or chunk.memory_estimate()  # (counted while its headers were checked)
        else:
            cost = _incoming_cost(chunk)
        self._costs.append(cost)
        self._buffered += cost
        self.incoming.put_nowait(chunk if error is None else _END)  # never waits
        if error is None and (len(queue) >= self._max_items or self._buffered >= self._max_bytes):
            self._settle()
            if len(queue) >= self._max_items or self._buffered >= self._max_bytes:
                self._held = True
                self._room.clear()

    def _settle(self):
        # Drop the costs of items taken straight from the queue (not through receive_chunk()).
        costs = self._costs
        for _ in range(len(costs) - len(self.incoming.queue)):
            self._buffered -= costs.popleft()

    def _taken(self):
        # receive_chunk() took an item: drop its cost, and let the reader go on once under both limits.
        if self._costs:
            self._buffered -= self._costs.popleft()
        if self._held and len(self.incoming.queue) < self._max_items and self._buffered < self._max_bytes:
            self._held = False
            self._room.set()

    def _wait_for_room(self, room):
        # As MSRPSession's, and also for an application that takes chunks straight from ``incoming``: that
        # tells nobody, so check the queue again after a while (less often the longer it stays full).
        self._reader_paused = True
        self._reader_pauses += 1
        try:
            delay = 0.01
            while not room.wait(delay):
                self._settle()
                if len(self.incoming.queue) < self._max_items and self._buffered < self._max_bytes:
                    self._held = False
                    room.set()
                    break
                delay = min(2 * delay, 1.0)
        finally:
            self._reader_paused = False

    def receive_chunk(self):
        """Return the next incoming chunk, waiting for it.

        Once the session has ended (and the queue is empty), raises the
        reason: :class:`~msrplib.transport.ConnectionDone`,
        :class:`~msrplib.transport.ConnectionLost`, a parse error...
        """
        while True:
            if self._end_failure is not None and self.incoming.empty():
                raise self._end_failure.value
            self._receivers += 1
            try:
                item = self.incoming.get()
            finally:
                self._receivers -= 1
            self._taken()
            if item is not _END:
                return item
