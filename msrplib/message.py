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

import bisect
import enum
import hashlib
import heapq
import io
import os
import tempfile
import time
import weakref

import gevent
from gevent.event import AsyncResult

from msrplib.protocol import (
    ByteRange, ByteRangeHeader, ContentTypeHeader, FailureReportHeader, HeaderParsingError, MSRPData, MSRPError,
    MSRPHeader, SuccessReportHeader, _new_header, _send_head_template, random_message_id, random_transaction_id)
from msrplib.transport import MSRPTransactionError

__all__ = ['OutgoingMessage', 'MessageState', 'IncomingMessage', 'MessageAssembler', 'PartialBudget', 'PROCESS_BUDGET',
           'DEFAULT_CHUNK_SIZE', 'DEFAULT_RELAY_CHUNK_SIZE', 'DEFAULT_REPORT_WINDOW', 'DEFAULT_REPORT_TIMEOUT',
           'REPORT_STEPS_IN_FLIGHT']

DEFAULT_CHUNK_SIZE = 65536
DEFAULT_WINDOW = 8  # chunks of one message awaiting their response at most: bounds the data queued ahead of chat
#: Chunk size when a relay is in the path: Kamailio 5.6 forwards frames (headers included) of up to 11238 bytes.
DEFAULT_RELAY_CHUNK_SIZE = 8192
#: Through a relay, bytes of a message sent but not yet confirmed by the receiver's REPORTs, at most.
DEFAULT_REPORT_WINDOW = 1024 * 1024
#: Through a relay a paced message keeps at most this many of the receiver's report steps (the bytes its last
#: REPORT newly confirmed) beyond what the REPORTs confirm: the receiver sets the window by its REPORTs' spacing.
REPORT_STEPS_IN_FLIGHT = 4
#: Seconds a message waits for a Success-Report (without any other progress) before it fails with 408.
DEFAULT_REPORT_TIMEOUT = 30

_tuple_new = tuple.__new__
# The headers OutgoingMessage makes itself (lower case).
_OWN_HEADERS = frozenset(('to-path', 'from-path', 'message-id', 'byte-range', 'content-type', 'success-report',
                          'failure-report'))


def _transport_key(transport):
    # What the To-Path and From-Path of the chunks made for ``transport`` depend on, compared by identity
    # (the objects; paths are set once a session is bound): a chunk template is for one such key only.
    return (transport, transport.local_uri, transport.remote_uri, transport.local_path, len(transport.local_path),
            transport.remote_path, len(transport.remote_path))


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
    """Disjoint, sorted, inclusive 1-based byte intervals (what arrived, or what was acknowledged).

    Kept as two sorted lists (starts, ends): :meth:`add` and :meth:`covers`
    find their place by bisection, O(log n) comparisons, plus one list splice
    (a memmove) for the intervals an addition merges; each interval is merged
    away at most once, so a stream of additions costs O(log n) each, amortised.
    ``total`` (bytes covered) and ``len()`` (intervals) are kept up to date.
    """

    __slots__ = ('starts', 'ends', 'total')

    def __init__(self):
        self.starts = []
        self.ends = []
        self.total = 0

    def __len__(self):
        return len(self.starts)

    def add(self, start, end):
        if end < start:
            return
        starts, ends = self.starts, self.ends
        if ends and ends[-1] + 1 == start:
            # right after the last interval (the chunks of a message in sequence): it grows, nothing merges
            ends[-1] = end
            self.total += end - start + 1
            return
        low = bisect.bisect_left(ends, start - 1)     # first interval touching or after [start, end]
        high = bisect.bisect_right(starts, end + 1)   # first interval beyond it
        removed = 0
        if low < high:
            start = min(start, starts[low])
            end = max(end, ends[high - 1])
            for index in range(low, high):
                removed += ends[index] - starts[index] + 1
        starts[low:high] = [start]
        ends[low:high] = [end]
        self.total += end - start + 1 - removed

    def covers(self, start, end):
        index = bisect.bisect_right(self.starts, start) - 1
        return index >= 0 and self.ends[index] >= end

    @property
    def last(self):
        """The highest byte position covered (0 when empty)."""
        return self.ends[-1] if self.ends else 0

    @property
    def intervals(self):
        return list(zip(self.starts, self.ends))


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
    True).  ``start_window`` (bytes, None: off), with ``report_window``:
    until the first REPORT confirms any of the message at most that many
    bytes are sent (a relay may queue the first frames in a small buffer
    while it opens its onward connection; the first REPORT shows that
    connection works); after it the window is ``REPORT_STEPS_IN_FLIGHT``
    (4) times the bytes the receiver's last REPORT newly confirmed (at most
    ``report_window``): the receiver sets the window by how often it
    reports.  An msrplib receiver doubles its steps from the first chunk on
    (like TCP's slow start) up to what its relay's connection to it holds
    for sure (``MSRPTransport.inbound_path_bytes``), since the relay drops
    frames beyond that; one that reports every chunk gets a window of four
    chunks.  ``start_wait`` (seconds, None: no limit) ends the start early
    when no REPORT came that long after the first chunk went out: a
    receiver may report only once it has the whole message (RFC 4975
    allows it), and the rest then goes paced on ``report_window``.
    ``report_timeout`` (seconds, None: no limit) bounds the wait for
    those REPORTs: when the message waits for them and none has come (nor
    any other progress) for that long, it fails with 408 and a comment
    saying that no Success-Report came.  ``relayed`` says a relay is in the
    path: a 413/501 or a closed connection then fails the message with a
    comment naming a too-large chunk as the likely cause.
    """

    def __init__(self, source, content_type, message_id=None, chunk_size=DEFAULT_CHUNK_SIZE, success_report=False,
                 failure_report='yes', progress_cb=None, headers=None, window=DEFAULT_WINDOW, report_window=None,
                 report_timeout=None, relayed=False, start_window=None, start_wait=None):
        if isinstance(source, str):
            source = source.encode('utf-8')
        if chunk_size < 1:
            raise ValueError('chunk_size must be positive')
        if window < 1:
            raise ValueError('window must be positive')
        if report_window is not None and report_window < 1:
            raise ValueError('report_window must be positive (or None)')
        if start_window is not None and start_window < 1:
            raise ValueError('start_window must be positive (or None)')
        if start_wait is not None and start_wait < 0:
            raise ValueError('start_wait must not be negative (or None)')
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
        self.start_window = start_window
        self.start_wait = start_wait
        self._start_over = False  # set start_wait seconds after the first chunk: the start window no longer holds
        self._report_step = None  # the bytes the last REPORT newly confirmed: see _current_report_window
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
        self._template = None  # see _make_template (False: not for this message)

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
            self._start_start_timer()
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
        template = self._template
        if template and data and template[0] == _transport_key(transport):
            # the headers of the first chunk again (the same objects), with this chunk's Byte-Range
            headers = template[1].copy()
            byte_range = _new_header(ByteRangeHeader, _tuple_new(ByteRange, (start, end, total)))
            headers['Byte-Range'] = byte_range
            chunk = MSRPData(random_transaction_id(), method='SEND', data=data, contflag='$' if last else '+')
            chunk._headers = headers
            chunk._head_rest = b''.join((template[2], b'%d-%d/%s' % (start, end, b'*' if total is None else
                                                                     b'%d' % total), template[3]))
            self._chunk_made(end, last)
            return chunk
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
        self._chunk_made(end, last)
        if template is None and not last:
            self._make_template(transport, chunk)
        return chunk

    def _chunk_made(self, end, last):
        self.bytes_sent = end
        self._pending_chunks += 1
        if last:
            self._finished_sending = True
            self.state = MessageState.SENT

    def _make_template(self, transport, chunk):
        # After the first chunk: what the next ones share (the same header objects, their lines encoded once),
        # so that they are made without formatting them again: (transport key, headers, head prefix, suffix).
        # Only for the headers this class makes (an application header named like one of them leaves it off).
        names = [header.name if isinstance(header, MSRPHeader) else header[0] for header in self.headers]
        if any(str(name).lower() in _OWN_HEADERS for name in names) or chunk.headers.get('Byte-Range') is None:
            self._template = False
            return
        try:
            parts = _send_head_template(chunk)
        except (ValueError, TypeError, MSRPError):
            parts = None  # the writer refuses the chunk (e.g. a line break in a header value): no template
        if parts is None:
            self._template = False
            return
        self._template = (_transport_key(transport), chunk.headers.copy(), parts[0], parts[1])

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
            confirmed = self.bytes_confirmed
            self._reported.add(byte_range.start, byte_range.end)
            step = self.bytes_confirmed - confirmed
            if step > 0:
                self._report_step = step
            if held and self.ready and self._wake is not None:
                self._wake()  # the receiver caught up: the writer may send more
            self._check_delivered()

    @property
    def bytes_confirmed(self):
        """Bytes from the start of the message that the receiver's REPORTs confirm."""
        reported = self._reported  # (read for every chunk sent: no list of the intervals made)
        return reported.ends[0] if reported.starts and reported.starts[0] == 1 else 0

    def _start_watchdog(self):
        # Bound the wait for Success-Reports (see report_timeout); ends with the outcome.
        if self.report_timeout is None or not self._wants_reports or self._watchdog is not None:
            return
        self._watchdog = gevent.spawn(self._watch, self.report_timeout)
        self.outcome.rawlink(lambda _: self._watchdog.kill(block=False))

    def _awaiting_reports(self):
        if self._finished_sending:
            return not self._pending_chunks
        window = self._current_report_window()
        return window is not None and self.bytes_sent - self.bytes_confirmed >= window

    def _current_report_window(self):
        # report_window; with start_window: start_window until a REPORT confirmed some of the message (or
        # report_window once start_wait ran out without one), then REPORT_STEPS_IN_FLIGHT times the last REPORT's
        # step.
        window = self.report_window
        if window is None or self.start_window is None:
            return window
        step = self._report_step
        if step is None:
            grown = window if self._start_over else self.start_window
        else:
            grown = REPORT_STEPS_IN_FLIGHT * step
        return grown if grown < window else window

    def _start_start_timer(self):
        # After start_wait seconds without a REPORT, let the message go on paced on report_window alone.
        if self.start_wait is None or self.start_window is None or self.report_window is None:
            return
        timer = gevent.spawn_later(self.start_wait, self._end_start)
        self.outcome.rawlink(lambda _: timer.kill(block=False))

    def _end_start(self):
        if self._start_over or self.outcome.ready():
            return
        self._start_over = True
        if self._report_step is None and self._wake is not None and not self._finished_sending:
            self._wake()  # held back by the start window: the writer may send more

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
        (and, with ``report_window``, fewer than that many bytes -- ``start_window`` until the first REPORT --
        await the receiver's REPORTs)."""
        if self._finished_sending:
            return False
        if self._abort_requested:
            return True
        if self._pending_chunks >= self.window:
            return False
        window = self._current_report_window()
        return window is None or self.bytes_sent - self.bytes_confirmed < window

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
        self.total = None
        self.discard_reason = None   # why a MessageAssembler dropped it incomplete (see on_discard)
        self.success_report = False
        # In memory: the bytes from byte 1 on without a gap, and the pieces received beyond a gap (by 0-based
        # offset, their offsets in a heap), so that memory is what arrived -- never a zero-filled hole.
        self._buffer = bytearray()
        self._pieces = {}
        self._piece_offsets = []
        self._pieces_bytes = 0
        self._received = _Ranges()
        self._memory = 0       # bytes charged to the memory budgets
        self._file_cost = 0    # bytes charged to the file budgets

    @property
    def bytes_received(self):
        """How many distinct bytes of the body have arrived."""
        return self._received.total

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

    # -- storage, for the assembler

    def _memory_cost(self):
        return len(self._buffer) + self._pieces_bytes + PIECE_OVERHEAD * len(self._pieces)

    def _write_memory(self, offset, data):
        buffer = self._buffer
        if offset <= len(buffer):
            buffer[offset:offset + len(data)] = data
            offsets, pieces = self._piece_offsets, self._pieces
            while offsets and offsets[0] <= len(buffer):
                start = heapq.heappop(offsets)
                piece = pieces.pop(start)
                self._pieces_bytes -= len(piece)
                if start + len(piece) > len(buffer):
                    buffer += memoryview(piece)[len(buffer) - start:]
            return
        old = self._pieces.get(offset)
        if old is None:
            heapq.heappush(self._piece_offsets, offset)
        elif len(old) >= len(data):
            return  # a repeat of what is held already (RFC 4975 lets a chunk be sent again)
        else:
            self._pieces_bytes -= len(old)
        self._pieces[offset] = bytes(data)
        self._pieces_bytes += len(data)

    def _move_to(self, handle):
        self.file = handle
        if self._buffer:
            handle.write(self._buffer)
        for offset, piece in self._pieces.items():
            handle.seek(offset)
            handle.write(piece)
        self._buffer = bytearray()
        self._pieces.clear()
        self._piece_offsets = []
        self._pieces_bytes = 0

    def _file_footprint(self):
        # What the file may take on disk: the bytes received, plus two file-system blocks per fragment (the
        # partly filled blocks at its ends) -- sparse writes allocate whole blocks.
        return self._received.total + 2 * FILE_BLOCK * len(self._received)


#: Bytes of bookkeeping counted for each piece of a message held in memory beyond a gap.
PIECE_OVERHEAD = 128
#: File-system block size assumed when counting what a partly received message takes on disk.
FILE_BLOCK = 4096


class PartialBudget:
    """Bytes held for incomplete messages by every :class:`MessageAssembler` that shares this budget.

    ``PartialBudget(max_memory=64 MiB, max_files=4 GiB)`` (None: no limit).
    ``memory`` and ``files`` are the bytes in use now (in memory, and in
    files by their disk footprint).  Assemblers use :data:`PROCESS_BUDGET`
    unless given another one, so the defaults bound a whole process.  An
    assembler that is garbage-collected without :meth:`MessageAssembler.clear`
    gives its share back.
    """

    def __init__(self, max_memory=64 * 1024 * 1024, max_files=4 * 1024 ** 3):
        self.max_memory = max_memory
        self.max_files = max_files
        self.memory = 0
        self.files = 0

    def __repr__(self):
        return '<PartialBudget memory %d/%s files %d/%s>' % (self.memory, self.max_memory, self.files,
                                                             self.max_files)


#: The budget shared by every assembler made without ``budget=`` (one per process).
PROCESS_BUDGET = PartialBudget()


class _Usage:
    # One assembler's share of its budget; given back by a finaliser if the assembler is dropped uncleared.
    __slots__ = ('memory', 'files')

    def __init__(self):
        self.memory = 0
        self.files = 0

    @staticmethod
    def give_back(usage, budget):
        budget.memory -= usage.memory
        budget.files -= usage.files
        usage.memory = usage.files = 0


class _Refuse(Exception):
    # Ends the message being assembled: the chunk gets ``code``/``comment`` and later chunks of it get 413.
    def __init__(self, code, comment):
        Exception.__init__(self, comment)
        self.code = code
        self.comment = comment


class MessageAssembler:
    """Reassembles incoming SEND chunks into whole messages, at the cost of what was received.

    ``MessageAssembler(max_message_size=64 MiB, memory_limit=1 MiB,
    open_file=None, max_partial_messages=64, max_fragments=1024,
    memory_budget=8 MiB, file_budget=None, budget=None, on_discard=None)``.
    Give it to a session as ``MSRPSession(..., assembler=MessageAssembler())``.

    * A message larger than ``max_message_size`` (by its Byte-Range) is
      answered 413 (and forgotten; its later chunks get 413 too).
    * A message is held in memory -- only the bytes that arrived, never a
      zero-filled gap -- until it is larger than ``memory_limit``, or until
      holding it would pass ``memory_budget`` (all incomplete messages of
      this assembler) or the shared ``budget``'s ``max_memory``; then it is
      written to ``open_file(message)`` (a callable returning a writable,
      seekable binary file; its ``truncate``, if it has one, is called
      with the message's size once it is complete) or to a temporary file.
    * Files count by their disk footprint (bytes received plus two blocks per
      fragment); a chunk that would take this assembler's files past
      ``file_budget`` (default: 256 MiB, or four times ``max_message_size``
      when that is more), or the
      shared ``budget`` past ``max_files``, ends its message with 413 (so
      does a write error, e.g. a full disk).
    * A message received in more than ``max_fragments`` separate pieces (gaps
      between them) is answered 413.  Ranges are kept sorted, O(log n) per
      chunk.
    * At most ``max_partial_messages`` messages may be incomplete at once (a
      chunk starting another one gets 413).
    * A chunk whose body runs past its Byte-Range end or total, or whose
      total contradicts an earlier chunk's, is answered 400.
    * ``budget``: a :class:`PartialBudget` shared with other assemblers
      (default :data:`PROCESS_BUDGET`).  ``on_discard(message)`` is called
      whenever an incomplete message is dropped (``#``, 413, a write error,
      :meth:`clear`) after its file is closed: e.g. to delete the file that
      ``open_file`` made.  The message's ``discard_reason`` then says why
      (``'aborted by the sender'``, the 413/400 sent, or that the session
      ended) and ``bytes_received`` how much of it had arrived.
    """

    def __init__(self, max_message_size=64 * 1024 * 1024, memory_limit=1024 * 1024, open_file=None,
                 max_partial_messages=64, max_fragments=1024, memory_budget=8 * 1024 * 1024,
                 file_budget=None, budget=None, on_discard=None):
        self.max_message_size = max_message_size
        self.memory_limit = memory_limit
        self.open_file = open_file
        self.max_partial_messages = max_partial_messages
        self.max_fragments = max_fragments
        self.memory_budget = memory_budget
        # None: 256 MiB, or room for four messages of the largest size accepted when that is more
        self.file_budget = file_budget if file_budget is not None else max(256 * 1024 * 1024, 4 * max_message_size)
        self.budget = budget if budget is not None else PROCESS_BUDGET
        self.on_discard = on_discard
        self.partial = {}        # Message-ID -> IncomingMessage
        self._refused = {}       # Message-IDs answered 413 (bounded, oldest dropped)
        self._usage = _Usage()
        weakref.finalize(self, _Usage.give_back, self._usage, self.budget)

    @property
    def memory_in_use(self):
        """Bytes of incomplete messages held in memory by this assembler."""
        return self._usage.memory

    @property
    def files_in_use(self):
        """Disk footprint (bytes) of the files of this assembler's incomplete messages."""
        return self._usage.files

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
            self._discard(message_id, message, 'aborted by the sender')
            return 200, 'OK', None
        data = chunk.data
        start = byte_range.start
        end = start + len(data) - 1
        total = byte_range.total
        if data and byte_range.end is not None and end > byte_range.end:
            return 400, 'Body longer than its Byte-Range', None
        if message is not None and total is not None and message.total is not None and total != message.total:
            return 400, 'Byte-Range total differs from an earlier chunk', None
        known_total = total if total is not None else message.total if message is not None else None
        if known_total is not None and end > known_total:
            return 400, 'Body beyond the Byte-Range total', None
        if max(end, total or 0) > self.max_message_size:
            comment = 'Message larger than %d bytes' % self.max_message_size
            self._refuse(message_id, message, '413 %s' % comment)
            return 413, comment, None
        if message is None:
            if len(self.partial) >= self.max_partial_messages:
                return 413, 'Too many messages in progress', None
            message = IncomingMessage(message_id, chunk)
            self.partial[message_id] = message
        try:
            self._take(message, chunk, start, end, total)
        except _Refuse as e:
            self._refuse(message_id, message, '%d %s' % (e.code, e.comment))
            return e.code, e.comment, None
        if message.total is not None and message._received.covers(1, message.total) or \
                (message.total == 0 and chunk.contflag == '$'):
            return 200, 'OK', self._complete(message)
        return 200, 'OK', None

    def _take(self, message, chunk, start, end, total):
        if total is not None:
            message.total = total
        if chunk.contflag == '$' and message.total is None:
            message.total = end
        if message.total is not None and message._received.last > message.total:
            raise _Refuse(400, 'Byte-Range total smaller than the bytes already received')
        try:
            if not message.success_report and chunk.success_report == 'yes':
                message.success_report = True
        except HeaderParsingError:
            pass
        if not chunk.data:
            return
        message._received.add(start, end)
        if len(message._received) > self.max_fragments:
            raise _Refuse(413, 'Message in more than %d fragments' % self.max_fragments)
        try:
            self._store(message, start - 1, chunk.data)
        except OSError as e:
            raise _Refuse(413, 'Cannot store the message: %s' % (e.strerror or e,))

    def _store(self, message, offset, data):
        usage, budget = self._usage, self.budget
        if message.file is None:
            grown = message._memory + len(data) + PIECE_OVERHEAD
            if max(offset + len(data), message.total or 0) > self.memory_limit or \
                    _over(usage.memory - message._memory + grown, self.memory_budget) or \
                    _over(budget.memory - message._memory + grown, budget.max_memory):
                self._charge_memory(message, 0)
                handle = self.open_file(message) if self.open_file is not None else tempfile.TemporaryFile()
                message._move_to(handle)
        if message.file is None:
            message._write_memory(offset, data)
            self._charge_memory(message, message._memory_cost())
            return
        footprint = message._file_footprint()
        delta = footprint - message._file_cost
        if _over(usage.files + delta, self.file_budget) or _over(budget.files + delta, budget.max_files):
            raise _Refuse(413, 'Out of space for incomplete messages')
        message.file.seek(offset)
        message.file.write(data)
        self._charge_files(message, footprint)

    def _charge_memory(self, message, cost):
        delta = cost - message._memory
        message._memory = cost
        self._usage.memory += delta
        self.budget.memory += delta

    def _charge_files(self, message, cost):
        delta = cost - message._file_cost
        message._file_cost = cost
        self._usage.files += delta
        self.budget.files += delta

    def _release(self, message):
        self._charge_memory(message, 0)
        self._charge_files(message, 0)

    def _complete(self, message):
        del self.partial[message.message_id]
        self._release(message)
        message.size = message.total
        if message.file is not None:
            message.file.flush()
            truncate = getattr(message.file, 'truncate', None)
            if truncate is not None:  # (a file-like sink that only streams what it is given may have none)
                truncate(message.total)
            message.file.seek(0)
        return message

    def _discard(self, message_id, message, reason):
        if message is None:
            return
        message.discard_reason = reason
        if self.partial.get(message_id) is message:
            del self.partial[message_id]
        self._release(message)
        message._buffer = bytearray()
        message._pieces.clear()
        if message.file is not None:
            try:
                message.file.close()
            except OSError:
                pass
        if self.on_discard is not None:
            self.on_discard(message)

    def _refuse(self, message_id, message, reason):
        self._discard(message_id, message, reason)
        self._refused[message_id] = True
        while len(self._refused) > 1024:
            del self._refused[next(iter(self._refused))]

    def clear(self):
        """Forget every incomplete message (closing their files, calling ``on_discard``)."""
        for message_id, message in list(self.partial.items()):
            self._discard(message_id, message, 'the session ended before it was complete')
        self.partial.clear()


def _over(value, limit):
    return limit is not None and value > limit
