"""Whole messages over chunks: sending a message of any size, and reassembling incoming ones.

The classic API leaves chunking to its callers.  This module adds both halves
on top of :class:`~msrplib.session.MSRPSession` without changing it:

* :class:`OutgoingMessage` -- made by :meth:`MSRPSession.send_large_message
  <msrplib.session.MSRPSession.send_large_message>` and ``send_file``: the
  session's writer sends it one chunk at a time (one Message-ID, correct
  Byte-Ranges), letting anything queued meanwhile go first, so a long
  transfer delays a chat line by one chunk at most.  A 413 response or REPORT
  stops it (the message ends with ``#``); :meth:`OutgoingMessage.abort` does
  the same on request.  Its ``outcome`` tells how it ended and a progress
  callback reports the bytes acknowledged.
* :class:`MessageAssembler` -- given to a session as ``assembler``, it
  collects incoming SEND chunks by Message-ID and Byte-Range (interleaved,
  out of order), drops messages ended with ``#``, answers 413 beyond
  ``max_message_size``, and hands whole :class:`IncomingMessage` objects to
  the application.
"""

import enum
import hashlib
import io
import os
import tempfile
import time

import gevent
from gevent.event import AsyncResult

from msrplib.protocol import (
    ByteRange, ByteRangeHeader, ContentTypeHeader, FailureReportHeader, HeaderParsingError, MSRPHeader,
    SuccessReportHeader, random_message_id)
from msrplib.transport import MSRPTransactionError

__all__ = ['OutgoingMessage', 'MessageState', 'IncomingMessage', 'MessageAssembler', 'DEFAULT_CHUNK_SIZE',
           'DEFAULT_RELAY_CHUNK_SIZE', 'DEFAULT_REPORT_WINDOW', 'DEFAULT_REPORT_TIMEOUT']

DEFAULT_CHUNK_SIZE = 65536
DEFAULT_WINDOW = 8  # chunks of one message awaiting their response at most: bounds the data queued ahead of chat
#: Chunk size when a relay is in the path: Kamailio 5.6 forwards frames (headers included) of up to 11238 bytes.
DEFAULT_RELAY_CHUNK_SIZE = 8192
#: Through a relay, bytes of a message sent but not yet confirmed by the receiver's REPORTs, at most.
DEFAULT_REPORT_WINDOW = 1024 * 1024
#: Seconds a message waits for a Success-Report (without any other progress) before it fails with 408.
DEFAULT_REPORT_TIMEOUT = 30

_RELAY_HINT = ('; a relay is in the path and may refuse frames this large (Kamailio forwards at most ~11 KB): '
               'use a smaller chunk_size (e.g. %d)' % DEFAULT_RELAY_CHUNK_SIZE)


class MessageState(str, enum.Enum):
    """Where an :class:`OutgoingMessage` is."""
    QUEUED = 'QUEUED'         #: waiting for the writer
    SENDING = 'SENDING'       #: chunks are going out
    SENT = 'SENT'             #: every chunk written; waiting for responses/reports
    DELIVERED = 'DELIVERED'   #: every chunk acknowledged (and reported, with Success-Report)
    FAILED = 'FAILED'         #: a chunk failed, the peer asked to stop (413), or the session ended
    ABORTED = 'ABORTED'       #: abort() was called

    def __str__(self):
        return self.value


class _Ranges:
    # Disjoint, sorted, inclusive 1-based byte intervals.
    def __init__(self):
        self.intervals = []

    def add(self, start, end):
        if end < start:
            return
        merged = []
        for a, b in self.intervals:
            if b + 1 < start or end + 1 < a:
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        merged.append((start, end))
        merged.sort()
        self.intervals = merged

    def covers(self, start, end):
        return any(a <= start and end <= b for a, b in self.intervals)

    @property
    def total(self):
        return sum(b - a + 1 for a, b in self.intervals)


def _source_size(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    try:
        return os.fstat(source.fileno()).st_size - source.tell()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        pass
    try:
        position = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(position)
        return end - position
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


class OutgoingMessage:
    """A message being sent as chunks of ``chunk_size`` bytes.

    Made by ``MSRPSession.send_large_message(source, content_type, ...)``;
    ``source`` is bytes (or str, sent as UTF-8) or a binary file object read
    as the chunks go out (never loaded whole).  Attributes: ``message_id``,
    ``size`` (None when the source's length is unknown: Byte-Range total
    ``*`` until the end), ``bytes_sent``, ``bytes_acknowledged``, ``state``
    (:class:`MessageState`), ``code``/``comment`` (the failure, if any) and
    ``outcome``, a ``gevent.event.AsyncResult`` set to this message when it
    is delivered and to an :class:`~msrplib.transport.MSRPTransactionError`
    exception when it fails.  ``progress_cb(message)`` is called (from the
    session's greenlets; it must not block) whenever ``bytes_acknowledged``
    grows.  At most ``window`` chunks await their response at any time, so
    that little of the message is queued in the network ahead of a chat line
    sent meanwhile.

    ``report_window`` (bytes, None: off) paces the message on end-to-end
    acknowledgement, for paths with a relay (whose 200 only means it took a
    chunk): every chunk asks for a Success-Report, and at most
    ``report_window`` bytes are sent beyond what the receiver's REPORTs
    confirm.  Such a message, like one sent with ``success_report``, counts
    as delivered only once REPORTs cover all of it (``confirmed`` is then
    True).  ``report_timeout`` (seconds, None: no limit) bounds the wait for
    those REPORTs: when the message waits for them and none has come (nor
    any other progress) for that long, it fails with 408 and a comment
    saying that no Success-Report came.  ``relayed`` says a relay is in the
    path: a 413/501 or a closed connection then fails the message with a
    comment naming a too-large chunk as the likely cause.
    """

    def __init__(self, source, content_type, message_id=None, chunk_size=DEFAULT_CHUNK_SIZE, success_report=False,
                 failure_report='yes', progress_cb=None, headers=None, window=DEFAULT_WINDOW, report_window=None,
                 report_timeout=None, relayed=False):
        if isinstance(source, str):
            source = source.encode('utf-8')
        if chunk_size < 1:
            raise ValueError('chunk_size must be positive')
        if window < 1:
            raise ValueError('window must be positive')
        if report_window is not None and report_window < 1:
            raise ValueError('report_window must be positive (or None)')
        if failure_report not in ('yes', 'partial'):
            raise ValueError("failure_report must be 'yes' or 'partial' (a message needs its responses)")
        if progress_cb is not None and not callable(progress_cb):
            raise TypeError('progress_cb must be callable')
        self.source = source
        self.content_type = content_type
        self.message_id = message_id or random_message_id()
        self.chunk_size = chunk_size
        self.window = window
        self.report_window = report_window
        self.report_timeout = report_timeout
        self.relayed = relayed
        self._wake = None  # set by the session's writer: call when a held-back message may send again
        self.success_report = success_report
        self.failure_report = failure_report
        self.progress_cb = progress_cb
        self.headers = list(headers or ())
        self.size = _source_size(source)
        self.bytes_sent = 0
        self.bytes_acknowledged = 0
        self.state = MessageState.QUEUED
        self.code = None
        self.comment = None
        self.outcome = AsyncResult()
        self._offset = 0 if isinstance(source, (bytes, bytearray, memoryview)) else None
        self._lookahead = None
        self._pending_chunks = 0
        self._acknowledged = _Ranges()
        self._reported = _Ranges()
        self._abort_requested = False
        self._finished_sending = False
        self._last_progress = time.monotonic()
        self._watchdog = None

    def __repr__(self):
        return '<OutgoingMessage %s %s %s/%s bytes>' % (self.message_id, self.state, self.bytes_acknowledged,
                                                        '*' if self.size is None else self.size)

    # -- for the application

    def abort(self):
        """Stop sending: the message ends with a ``#`` chunk and fails with code 0 (aborted)."""
        if self.state in (MessageState.QUEUED, MessageState.SENDING):
            self._abort_requested = True
            if self._wake is not None:
                self._wake()

    def wait(self, timeout=None):
        """Wait for the outcome: returns this message when delivered, raises
        :class:`~msrplib.transport.MSRPTransactionError` when it failed
        (``gevent.Timeout`` after ``timeout`` seconds)."""
        return self.outcome.get(timeout=timeout)

    @property
    def done(self):
        """True once the outcome is known."""
        return self.outcome.ready()

    @property
    def confirmed(self):
        """True when the message was delivered and the receiver's Success-Reports confirm every byte.

        False while it is under way, when it failed, and when it was
        delivered without asking for reports (then only the next hop
        acknowledged it: through a relay, that is the relay).
        """
        return self.state == MessageState.DELIVERED and self._wants_reports

    @property
    def _wants_reports(self):
        # True when the chunks ask for Success-Reports and the outcome waits for them.
        return bool(self.success_report) or self.report_window is not None

    # -- for the session's writer

    def _read(self):
        source = self.source
        if self._offset is not None:
            data = bytes(source[self._offset:self._offset + self.chunk_size])
            self._offset += len(data)
            return data
        return source.read(self.chunk_size) or b''

    def next_chunk(self, transport):
        """The next chunk to send (an MSRPData), or None when there is nothing more to send.

        Called by the session's writer; marks the message SENDING.
        """
        if self._finished_sending:
            return None
        if self._abort_requested:
            return self._abort_chunk(transport, 'ABORTED')
        if self.state == MessageState.QUEUED:
            self.state = MessageState.SENDING
            self._start_watchdog()
        self._last_progress = time.monotonic()
        data = self._lookahead if self._lookahead is not None else self._read()
        self._lookahead = None
        start = self.bytes_sent + 1
        end = self.bytes_sent + len(data)
        if self.size is not None:
            last = end >= self.size
        else:
            self._lookahead = self._read()
            last = not self._lookahead
        total = self.size if self.size is not None else (end if last else None)
        chunk = transport.make_chunk(method='SEND', data=data, start=start, end=end, length=total,
                                     message_id=self.message_id, contflag='$' if last else '+')
        if self.size is None and not last:
            chunk.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(start, end, None))
        chunk.add_header(ContentTypeHeader(self.content_type))
        if self._wants_reports:
            chunk.add_header(SuccessReportHeader('yes'))
        if self.failure_report != 'yes':
            chunk.add_header(FailureReportHeader(self.failure_report))
        for header in self.headers:
            chunk.add_header(header if isinstance(header, MSRPHeader) else MSRPHeader(*header))
        self.bytes_sent = end
        self._pending_chunks += 1
        if last:
            self._finished_sending = True
            self.state = MessageState.SENT
        return chunk

    def _abort_chunk(self, transport, state):
        # The '#' chunk that ends the message for the receiver (RFC 4975 §7.1.1).
        self._finished_sending = True
        chunk = transport.make_chunk(method='SEND', data=b'', start=self.bytes_sent + 1, end=self.bytes_sent,
                                     length=self.size, message_id=self.message_id, contflag='#')
        chunk.add_header(FailureReportHeader('no'))
        if state == 'ABORTED':
            self._fail(0, 'Aborted by the sender', MessageState.ABORTED)
        return chunk

    def response_callback(self, chunk):
        """The response_cb the writer gives each chunk of this message."""
        start = chunk.byte_range.start
        length = len(chunk.data)

        def on_response(response):
            self._last_progress = time.monotonic()
            self._pending_chunks -= 1
            if self._pending_chunks == self.window - 1 and self._wake is not None and not self._finished_sending:
                self._wake()
            if response.code == 200:
                if length:
                    self._acknowledged.add(start, start + length - 1)
                    self.bytes_acknowledged = self._acknowledged.total
                    self._progress()
                self._check_delivered()
            else:
                self._fail(response.code, self._explain(response.code, response.comment))
        return on_response

    def _explain(self, code, comment):
        # A failure's comment, with the likely cause when a relay is in the path and refused a large chunk.
        if not self.relayed:
            return comment
        if code in (413, 501) or (code == 408 and self.chunk_size > DEFAULT_RELAY_CHUNK_SIZE):
            return '%s%s' % (comment or '', _RELAY_HINT)
        return comment

    def handle_report(self, report):
        """A REPORT for this message arrived (the session routes them by Message-ID)."""
        try:
            status = report.status
            byte_range = report.byte_range
        except HeaderParsingError:
            return
        if status is None:
            return
        if status.code != 200:
            self._fail(status.code, status.comment)
            return
        if byte_range is not None and byte_range.end is not None:
            self._last_progress = time.monotonic()
            held = not self.ready
            self._reported.add(byte_range.start, byte_range.end)
            if held and self.ready and self._wake is not None:
                self._wake()  # the receiver caught up: the writer may send more
            self._check_delivered()

    @property
    def bytes_confirmed(self):
        """Bytes from the start of the message that the receiver's REPORTs confirm."""
        intervals = self._reported.intervals
        return intervals[0][1] if intervals and intervals[0][0] == 1 else 0

    def _start_watchdog(self):
        # Bound the wait for Success-Reports (see report_timeout); ends with the outcome.
        if self.report_timeout is None or not self._wants_reports or self._watchdog is not None:
            return
        self._watchdog = gevent.spawn(self._watch, self.report_timeout)
        self.outcome.rawlink(lambda _: self._watchdog.kill(block=False))

    def _awaiting_reports(self):
        if self._finished_sending:
            return not self._pending_chunks
        return self.report_window is not None and self.bytes_sent - self.bytes_confirmed >= self.report_window

    def _watch(self, timeout):
        while not self.outcome.ready():
            remaining = self._last_progress + timeout - time.monotonic()
            if remaining > 0:
                gevent.sleep(remaining)
                continue
            if self._awaiting_reports():
                self._fail(408, 'No Success-Report within %s s: the receiver confirmed %d of %s bytes (it may '
                                'have gone away; a relay answers 200 for chunks it cannot deliver)'
                           % (timeout, self.bytes_confirmed, self.bytes_sent))
                return
            self._last_progress = time.monotonic()  # waiting for something else: the responses have their own limit

    def session_ended(self, reason):
        """The session ended before the outcome was known."""
        self._fail(408, self._explain(408, 'Session ended: %s' % (reason,)))

    @property
    def ready(self):
        """True when the writer may send the next chunk now: fewer than ``window`` chunks await a response
        (and, with ``report_window``, fewer than that many bytes await the receiver's REPORTs)."""
        if self._finished_sending:
            return False
        if self._abort_requested:
            return True
        if self._pending_chunks >= self.window:
            return False
        return self.report_window is None or self.bytes_sent - self.bytes_confirmed < self.report_window

    @property
    def wants_writer(self):
        """True while the writer has chunks of this message to send (or the '#' of an abort/stop)."""
        return not self._finished_sending

    def _progress(self):
        if self.progress_cb is not None:
            try:
                self.progress_cb(self)
            except Exception:
                pass

    def _check_delivered(self):
        if self.outcome.ready() or not self._finished_sending or self._pending_chunks:
            return
        if self.state not in (MessageState.SENT, MessageState.SENDING):
            return
        size = self.bytes_sent
        if self._wants_reports and size and not self._reported.covers(1, size):
            return
        self.state = MessageState.DELIVERED
        self.outcome.set(self)

    def _fail(self, code, comment, state=MessageState.FAILED):
        if self.outcome.ready():
            return
        if not self._finished_sending:
            self._abort_requested = True   # the writer sends the '#' that ends it
            if self._wake is not None:
                self._wake()
        self.state = state
        self.code = code
        self.comment = comment
        self.outcome.set_exception(MSRPTransactionError(comment=comment, code=code))


class IncomingMessage:
    """A whole message reassembled from its chunks by a :class:`MessageAssembler`.

    ``message_id``, ``content_type``, ``size``, ``headers`` (those of the
    first chunk), ``chunk`` (the first chunk itself), and either ``data``
    (bytes) or, for a message streamed to a file, ``file`` (a binary file
    object positioned at 0; ``data`` reads it).  ``method`` is ``'SEND'`` so
    code that looks at chunks can tell it from a REPORT.
    """

    method = 'SEND'

    def __init__(self, message_id, chunk):
        self.message_id = message_id
        self.chunk = chunk
        self.headers = chunk.headers
        try:
            self.content_type = chunk.content_type
        except HeaderParsingError:
            self.content_type = None
        self.size = 0
        self.file = None
        self._buffer = bytearray()
        self._received = _Ranges()
        self.total = None
        self.success_report = False

    @property
    def data(self):
        """The body as bytes (read from ``file`` when the message was streamed)."""
        if self.file is None:
            return bytes(self._buffer)
        position = self.file.tell()
        self.file.seek(0)
        try:
            return self.file.read()
        finally:
            self.file.seek(position)

    def sha1(self):
        """The SHA-1 digest (bytes) of the body, computed in blocks."""
        digest = hashlib.sha1()
        if self.file is None:
            digest.update(self._buffer)
        else:
            self.file.seek(0)
            for block in iter(lambda: self.file.read(1 << 20), b''):
                digest.update(block)
            self.file.seek(0)
        return digest.digest()

    def __repr__(self):
        return '<IncomingMessage %s %s %d bytes>' % (self.message_id, self.content_type, self.size)


class MessageAssembler:
    """Reassembles incoming SEND chunks into whole messages.

    ``MessageAssembler(max_message_size=64 MiB, memory_limit=1 MiB, open_file=None, max_partial_messages=64)``:
    a message larger than ``max_message_size`` (by its Byte-Range) is
    answered 413 (and forgotten); a message larger than ``memory_limit`` is
    written to ``open_file(message)`` (a callable returning a writable,
    seekable binary file) or to a temporary file; at most
    ``max_partial_messages`` messages may be incomplete at once (a chunk
    starting another one gets 413).  Give it to a session as
    ``MSRPSession(..., assembler=MessageAssembler())``.
    """

    def __init__(self, max_message_size=64 * 1024 * 1024, memory_limit=1024 * 1024, open_file=None,
                 max_partial_messages=64):
        self.max_message_size = max_message_size
        self.memory_limit = memory_limit
        self.open_file = open_file
        self.max_partial_messages = max_partial_messages
        self.partial = {}        # Message-ID -> IncomingMessage
        self._refused = {}       # Message-IDs answered 413 (bounded, oldest dropped)

    def accept(self, chunk):
        """Take SEND ``chunk``; return ``(code, comment, message)``.

        ``code``/``comment`` is the response the chunk deserves (200, 400,
        413); ``message`` is the :class:`IncomingMessage` this chunk
        completed, or None.
        """
        try:
            message_id = chunk.message_id
            byte_range = chunk.byte_range or ByteRange(1, len(chunk.data), len(chunk.data))
        except HeaderParsingError as e:
            return 400, str(e), None
        if message_id is None:
            return 400, 'Message-ID is required', None
        if message_id in self._refused:
            return 413, 'Message too large', None
        message = self.partial.get(message_id)
        if chunk.contflag == '#':
            self.partial.pop(message_id, None)
            self._close(message)
            return 200, 'OK', None
        start = byte_range.start
        end = start + len(chunk.data) - 1
        total = byte_range.total
        if max(end, total or 0) > self.max_message_size:
            self._refuse(message_id, message)
            return 413, 'Message larger than %d bytes' % self.max_message_size, None
        if message is None:
            if len(self.partial) >= self.max_partial_messages:
                return 413, 'Too many messages in progress', None
            message = IncomingMessage(message_id, chunk)
            self.partial[message_id] = message
        if total is not None:
            message.total = total
        if chunk.contflag == '$' and message.total is None:
            message.total = end
        try:
            if chunk.success_report == 'yes':
                message.success_report = True
        except HeaderParsingError:
            pass
        if chunk.data:
            try:
                self._store(message, start, chunk.data)
            except OSError as e:
                self.partial.pop(message_id, None)
                self._close(message)
                return 413, 'Cannot store the message: %s' % (e,), None
            message._received.add(start, end)
        if message.total is not None and message._received.covers(1, message.total) or \
                (message.total == 0 and chunk.contflag == '$'):
            del self.partial[message_id]
            message.size = message.total
            if message.file is not None:
                message.file.flush()
                message.file.seek(0)
            return 200, 'OK', message
        return 200, 'OK', None

    def _store(self, message, start, data):
        offset = start - 1
        end = offset + len(data)
        if message.file is None and max(end, message.total or 0) > self.memory_limit:
            message.file = self.open_file(message) if self.open_file is not None else tempfile.TemporaryFile()
            if message._buffer:
                message.file.write(message._buffer)
                message._buffer = bytearray()
        if message.file is not None:
            message.file.seek(offset)
            message.file.write(data)
            return
        buffer = message._buffer
        if len(buffer) < offset:
            buffer.extend(bytes(offset - len(buffer)))
        buffer[offset:end] = data

    def _refuse(self, message_id, message):
        self.partial.pop(message_id, None)
        self._close(message)
        self._refused[message_id] = True
        while len(self._refused) > 1024:
            del self._refused[next(iter(self._refused))]

    @staticmethod
    def _close(message):
        if message is not None and message.file is not None:
            try:
                message.file.close()
            except OSError:
                pass

    def clear(self):
        """Forget every incomplete message (closing their files)."""
        for message in self.partial.values():
            self._close(message)
        self.partial.clear()
