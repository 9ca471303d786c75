"""RawPeer: a scripted MSRP peer over a real socket, for testing how an application handles the wire.

It writes whatever bytes it is told (well-formed chunks, malformed ones,
pieces split at chosen offsets, slowly), reads what the other side sends
with its own small parser (independent of msrplib's), and checks it with
matchers.  It answers only when told to, so "no response at all" is simply
not answering.  Every wait takes a timeout and fails with
:class:`~msrplib.testing.WaitTimeout` saying what it waited for.
"""

import collections
import re
import secrets
import socket as stdlib_socket
import struct

import gevent
import gevent.event
import gevent.socket

from msrplib import tls as msrp_tls
from msrplib.testing._wait import DEFAULT_TIMEOUT, WaitTimeout, waiting_for

__all__ = ['RawPeer', 'Frame', 'RawSender', 'build_chunk']

_START = re.compile(rb'MSRP ([A-Za-z0-9][A-Za-z0-9.+%=-]{2,31}) (?:(\d{3})(?: ([^\r\n]*))?|([A-Z]+))\r\n')
#: Bytes kept from the other side when they do not form a chunk: more is dropped (a hostile victim).
MAX_PENDING = 1024 * 1024


class Frame:
    """One chunk read by a :class:`RawPeer`: a request (``method``) or a response (``code``).

    ``headers`` is the list of ``(name, value)`` text pairs in order;
    :meth:`header` looks one up by name (any case).  ``body`` is bytes,
    ``flag`` one of ``$ + #``, ``raw`` the chunk's bytes as they arrived.
    """

    def __init__(self, raw, tid, method, code, comment, headers, body, flag):
        self.raw = raw
        self.tid = self.transaction_id = tid
        self.method = method
        self.code = code
        self.comment = comment
        self.headers = headers
        self.body = body
        self.flag = flag

    def header(self, name, default=None):
        """The value of header ``name`` (case-insensitive), or ``default``."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    @property
    def message_id(self):
        """The Message-ID header (None without one)."""
        return self.header('Message-ID')

    def matches(self, method=None, code=None, headers=None, body=None, tid=None):
        """True when every given matcher holds (see :meth:`RawPeer.expect`)."""
        return not self.mismatches(method, code, headers, body, tid)

    def mismatches(self, method=None, code=None, headers=None, body=None, tid=None):
        """The matchers that do not hold, as text (empty when all do)."""
        wrong = []
        if method is not None and self.method != method:
            wrong.append('method %r != %r' % (self.method, method))
        if code is not None and self.code != code:
            wrong.append('code %r != %r' % (self.code, code))
        if tid is not None and self.tid != tid:
            wrong.append('transaction id %r != %r' % (self.tid, tid))
        if body is not None and not _holds(body, self.body):
            wrong.append('body %r does not match %r' % (self.body[:80], body))
        for name, expected in (headers or {}).items():
            value = self.header(name)
            if expected is None:
                if value is not None:
                    wrong.append('header %s present (%r)' % (name, value))
            elif value is None or not _holds(expected, value):
                wrong.append('header %s: %r does not match %r' % (name, value, expected))
        return wrong

    def __repr__(self):
        what = self.method if self.method is not None else '%s %s' % (self.code, self.comment or '')
        return '<Frame %s %s %d header(s) %d body bytes%s>' % (self.tid, what.strip(), len(self.headers),
                                                               len(self.body), self.flag)


def _holds(expected, value):
    # a matcher: callable(value) -> bool, a compiled regex (search), or equality
    if callable(expected):
        return bool(expected(value))
    if isinstance(expected, re.Pattern):
        return expected.search(value) is not None
    return expected == value


def _parse(buffer):
    """(Frame, bytes used) for the first chunk in ``buffer``; (None, bytes to skip) when none is complete yet."""
    match = _START.search(buffer)
    if match is None:
        return None, max(0, len(buffer) - 128)     # keep a tail that may begin a start line
    start = match.start()
    tid = match.group(1)
    end_line = re.compile(rb'\r\n-------' + re.escape(tid) + rb'([$#+])\r\n')
    head_end = match.end()
    ending = end_line.search(buffer, head_end - 2)
    if ending is None:
        return None, start
    headers_end = buffer.find(b'\r\n\r\n', head_end - 2, ending.start() + 2)
    if headers_end == -1:
        header_bytes, body = buffer[head_end:ending.start() + 2], b''
    else:
        header_bytes, body = buffer[head_end:headers_end + 2], bytes(buffer[headers_end + 4:ending.start()])
    headers = []
    for line in bytes(header_bytes).split(b'\r\n'):
        if line:
            name, _, value = line.partition(b':')
            headers.append((name.decode('utf-8', 'replace').strip(), value.decode('utf-8', 'replace').strip()))
    code = int(match.group(2)) if match.group(2) else None
    comment = match.group(3).decode('utf-8', 'replace') if match.group(3) is not None else None
    method = match.group(4).decode('ascii') if match.group(4) else None
    frame = Frame(bytes(buffer[start:ending.end()]), tid.decode('ascii'), method, code, comment, headers, body,
                  ending.group(1).decode('ascii'))
    return frame, ending.end()


def _line(item):
    if isinstance(item, bytes):
        return item
    if isinstance(item, tuple):
        name, value = item
        return (name if isinstance(name, bytes) else name.encode()) + b': ' + \
            (value if isinstance(value, bytes) else str(value).encode())
    return str(item).encode()


def _text(path):
    if path is None or path is False or isinstance(path, (bytes, str)):
        return path
    return ' '.join(str(uri) for uri in path)


def build_chunk(tid, method, to_path, from_path, headers=(), body=None, flag='$'):
    """The bytes of a request written by hand, so that it may break every rule.

    ``to_path``/``from_path``: text, bytes, a list of URIs, or False to leave
    the header out.  ``headers``: ``(name, value)`` pairs, text lines or raw
    bytes lines, written as given after the paths.  ``body`` None writes no
    body section at all; bytes (even empty) write the blank line and the body.
    """
    lines = [b'MSRP ' + _line(tid) + b' ' + _line(method)]
    for name, value in ((b'To-Path', _text(to_path)), (b'From-Path', _text(from_path))):
        if value is not False and value is not None:
            lines.append(_line((name, value)))
    lines += [_line(item) for item in headers]
    data = b'\r\n'.join(lines) + b'\r\n'
    if body is not None:
        data += b'\r\n' + bytes(body) + b'\r\n'
    return data + b'-------' + _line(tid) + _line(flag) + b'\r\n'


class RawPeer:
    """A scripted MSRP endpoint on a real socket: ``listen()``/``accept()`` (passive) or ``connect(path)`` (active).

    ``RawPeer(host='127.0.0.1', tls=False, session_id=None, timeout=10)``.
    With ``tls`` it presents an ephemeral self-signed certificate whose
    fingerprint is :attr:`fingerprint` (passive) and does not check the other
    side's (active).  :attr:`uri` is its own MSRP URI (valid once listening
    or connected); :attr:`remote_path` the other side's path, as text (given
    to :meth:`connect`, or learnt from the From-Path of the first request
    when passive).  Chunks the other side sends are read by a greenlet and
    taken with :meth:`expect` / :meth:`next_frame`; :attr:`responses` maps
    transaction id -> the response :class:`Frame`.
    """

    def __init__(self, host='127.0.0.1', tls=False, session_id=None, timeout=DEFAULT_TIMEOUT):
        self.host = host
        self.tls = bool(tls)
        self.session_id = session_id or secrets.token_hex(8)
        self.timeout = timeout
        self.uri = None
        self.remote_path = None
        self.fingerprint = None
        self.sock = None
        self.listener = None
        self.frames = collections.deque()
        self.responses = {}
        self.received_bytes = 0
        self.closed = gevent.event.Event()
        self._changed = gevent.event.Event()
        self._reader = None
        self._server_context = None
        self._prepared = None
        self._may_read = gevent.event.Event()
        self._may_read.set()

    # -- connecting ---------------------------------------------------------

    def _make_uri(self, port):
        scheme = 'msrps' if self.tls else 'msrp'
        host = '[%s]' % self.host if ':' in self.host else self.host
        return '%s://%s:%d/%s;tcp' % (scheme, host, port, self.session_id)

    def listen(self):
        """Listen on a free port of :attr:`host`; return :attr:`uri` (what the application connects to)."""
        family = stdlib_socket.AF_INET6 if ':' in self.host else stdlib_socket.AF_INET
        self.listener = gevent.socket.socket(family, stdlib_socket.SOCK_STREAM)
        self.listener.bind((self.host, 0))
        self.listener.listen(8)
        if self.tls:
            self._server_context, self.fingerprint = msrp_tls.server_context(
                msrp_tls.TLSCredentials.ephemeral(hostnames=(self.host, 'localhost')))
        self.uri = self._make_uri(self.listener.getsockname()[1])
        return self.uri

    def accept(self, timeout=None):
        """Wait for the application to connect (after :meth:`listen`); return self."""
        timeout = self.timeout if timeout is None else timeout
        with waiting_for('a connection to the raw peer at %s' % self.uri, timeout):
            sock, _ = self.listener.accept()
            if self._server_context is not None:
                sock = msrp_tls.wrap_socket(sock, self._server_context, server_side=True)
        self._start(sock)
        return self

    def connect(self, path, timeout=None):
        """Connect to the first hop of ``path`` (text or a list of URIs) as the active side; return self."""
        self.remote_path = _text(path)
        first = self.remote_path.split()[0]
        match = re.match(r'(msrps?)://(?:[^@/]*@)?(\[[^\]]+\]|[^:/;]+):(\d+)', first)
        if match is None:
            raise ValueError('no host and port in %r' % first)
        host, port = match.group(2).strip('[]'), int(match.group(3))
        timeout = self.timeout if timeout is None else timeout
        if match.group(1) == 'msrps':
            self.tls = True
        sock = self._prepared if self._prepared is not None else self._bound_socket()
        self._prepared = None
        self._may_read = gevent.event.Event()
        self._may_read.set()
        with waiting_for('the raw peer connecting to %s:%d' % (host, port), timeout):
            sock.connect((host, port))
            if self.tls:
                sock = msrp_tls.wrap_socket(sock, msrp_tls.client_context())
        self._start(sock)
        return self

    def _bound_socket(self):
        family = stdlib_socket.AF_INET6 if ':' in self.host else stdlib_socket.AF_INET
        sock = gevent.socket.socket(family, stdlib_socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        self.uri = self._make_uri(sock.getsockname()[1])
        return sock

    def prepare(self, tls=None):
        """As the active side, bind the local socket now and return :attr:`uri`, before :meth:`connect`.

        For an application that must be told the peer's path before it
        accepts (an acceptor whose ``complete`` does the TLS handshake).
        """
        if tls is not None:
            self.tls = bool(tls)
        if self._prepared is None:
            self._prepared = self._bound_socket()
        return self.uri

    def _start(self, sock):
        self.sock = sock
        if self.uri is None:
            self.uri = self._make_uri(sock.getsockname()[1])
        self._reader = gevent.spawn(self._read)

    def _read(self):
        buffer = bytearray()
        try:
            while True:
                self._may_read.wait()
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received_bytes += len(data)
                buffer += data
                while True:
                    frame, used = _parse(buffer)
                    if frame is None:
                        if len(buffer) - used > MAX_PENDING:
                            used = len(buffer) - 65536
                        del buffer[:used]
                        break
                    del buffer[:used]
                    if frame.code is not None:
                        self.responses[frame.tid] = frame
                    elif self.remote_path is None:
                        self.remote_path = frame.header('From-Path')
                    self.frames.append(frame)
                    self._changed.set()
        except OSError:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    # -- writing ------------------------------------------------------------

    def send_raw(self, data, split_at=(), delay=0, stop_at=None):
        """Write ``data`` as is; with ``split_at`` (byte offsets) in separate writes, ``delay`` seconds apart.

        ``stop_at`` writes only the first ``stop_at`` bytes (negative: all
        but the last ``-stop_at``), a chunk whose end never comes.  Raises
        OSError when the connection is gone.
        """
        data = bytes(data)
        if stop_at is not None:
            data = data[:stop_at]
        offsets = sorted(set(int(offset) for offset in split_at if 0 < offset < len(data)))
        pieces = [data[a:b] for a, b in zip([0] + offsets, offsets + [len(data)])]
        for index, piece in enumerate(pieces):
            if index and delay:
                gevent.sleep(delay)
            self.sock.sendall(piece)
        if not pieces and delay:
            gevent.sleep(delay)

    def send(self, method='SEND', body=b'', headers=None, tid=None, message_id=None,
             content_type='text/plain', byte_range=None, to_path=None, from_path=None, flag='$',
             extra_headers=(), split_at=(), delay=0, stop_at=None):
        """Write a request chunk built from the arguments; return its transaction id.

        Defaults make a whole, valid SEND to :attr:`remote_path` from
        :attr:`uri`: a fresh Message-ID, ``Byte-Range: 1-N/N`` and
        ``Content-Type``.  ``headers`` (a list of pairs or lines) replaces
        those three entirely; ``extra_headers`` is added after them.
        ``to_path``/``from_path`` False leave the header out; bytes or text
        are written as is (so malformed paths are possible).  ``body`` None
        writes no body section (b'' an empty one); ``split_at``, ``delay``
        and ``stop_at`` as for :meth:`send_raw`.
        """
        tid = tid or secrets.token_hex(6)
        if headers is None:
            headers = [('Message-ID', message_id or secrets.token_hex(8))]
            if byte_range is None and body is not None:
                byte_range = '1-%d/%d' % (len(body), len(body))
            if byte_range is not None:
                headers.append(('Byte-Range', byte_range))
            if content_type is not None and body:
                headers.append(('Content-Type', content_type))
        data = build_chunk(tid, method, self.remote_path if to_path is None else to_path,
                           self.uri if from_path is None else from_path, list(headers) + list(extra_headers),
                           body, flag)
        self.send_raw(data, split_at, delay, stop_at)
        return tid

    def respond(self, request, code=200, comment=None, headers=(), split_at=(), delay=0):
        """Answer ``request`` (a :class:`Frame`) with ``code``: To-Path is its From-Path's first URI.

        ``request`` may also be a bare transaction id (a response to a request
        never received; To-Path is then the first URI of :attr:`remote_path`).

        ``comment`` (text, or bytes written as they are) defaults to OK / Error."""
        if isinstance(request, str):
            tid, to_path = request, (self.remote_path or '').split()[:1]
        else:
            tid, to_path = request.tid, (request.header('From-Path') or '').split()[:1]
        comment = comment if comment is not None else ('OK' if code == 200 else 'Error')
        comment = comment if isinstance(comment, bytes) else comment.encode()
        lines = [b'MSRP %s %03d %s' % (tid.encode(), code, comment),
                 b'To-Path: ' + (to_path[0].encode() if to_path else b''),
                 b'From-Path: ' + self.uri.encode()] + [_line(item) for item in headers]
        self.send_raw(b'\r\n'.join(lines) + b'\r\n-------' + tid.encode() + b'$\r\n', split_at, delay)

    def report(self, request, status='000 200 OK', tid=None):
        """Send a REPORT for SEND ``request`` (a :class:`Frame`) with ``status``; return its transaction id."""
        size = len(request.body)
        return self.send('REPORT', body=None, to_path=request.header('From-Path'), tid=tid,
                         headers=[('Message-ID', request.message_id or ''), ('Byte-Range', '1-%d/%d' % (size, size)),
                                  ('Status', status)])

    def bind(self, timeout=None):
        """As the active side, send the empty binding SEND; return the response :class:`Frame`."""
        tid = self.send(body=None, byte_range='1-0/0', content_type=None)
        return self.wait_response(tid, timeout)

    # -- reading ------------------------------------------------------------

    def next_frame(self, timeout=None, what='a chunk from the other side'):
        """The next chunk the other side sent (a :class:`Frame`).

        Raises :class:`~msrplib.testing.WaitTimeout`, or AssertionError
        when the connection closed before one came.
        """
        timeout = self.timeout if timeout is None else timeout
        with waiting_for('%s at the raw peer %s' % (what, self.uri), timeout):
            while True:
                if self.frames:
                    return self.frames.popleft()
                if self.closed.is_set():
                    raise AssertionError('the connection closed while the raw peer waited for %s' % what)
                self._changed.clear()
                self._changed.wait()

    def expect(self, method=None, code=None, headers=None, body=None, tid=None, respond=None, skip=False,
               timeout=None):
        """The next chunk, checked against matchers; it is answered with ``respond`` (a code) when given.

        Matchers: ``method`` ('SEND', 'REPORT'...; None matches responses
        too), ``code`` (of a response), ``tid``, ``body`` and ``headers``
        (name -> value).  A value matcher is the exact text, a compiled
        regular expression (searched), a callable returning true, or None
        for a header that must be absent.  A chunk that does not match fails
        with AssertionError saying why, unless ``skip`` (then it is dropped
        and the next one tried).  ``respond=None`` leaves it unanswered.
        """
        what = ', '.join('%s=%r' % item for item in (('method', method), ('code', code), ('tid', tid),
                                                       ('headers', headers), ('body', body)) if item[1] is not None)
        what = 'a chunk with %s' % what if what else 'a chunk'
        timeout = self.timeout if timeout is None else timeout
        with waiting_for(what, timeout):
            while True:
                frame = self.next_frame(timeout=timeout + 1, what=what)
                wrong = frame.mismatches(method, code, headers, body, tid)
                if not wrong:
                    break
                if not skip:
                    raise AssertionError('expected %s, got %r: %s' % (what, frame, '; '.join(wrong)))
        if respond is not None:
            self.respond(frame, respond)
        return frame

    def wait_response(self, tid, timeout=None):
        """The response :class:`Frame` to transaction ``tid``, taken out of the queue :meth:`expect` reads.

        Raises :class:`~msrplib.testing.WaitTimeout`, or AssertionError when the connection closed first.
        """
        timeout = self.timeout if timeout is None else timeout
        with waiting_for('the response to transaction %s' % tid, timeout):
            while tid not in self.responses:
                if self.closed.is_set():
                    raise AssertionError('the connection closed before the response to transaction %s' % tid)
                self._changed.clear()
                self._changed.wait()
        frame = self.responses[tid]
        try:
            self.frames.remove(frame)      # taken here: expect() goes on with the chunks after it
        except ValueError:
            pass
        return frame

    def wait_closed(self, timeout=None):
        """Wait until the other side closes the connection (EOF or reset)."""
        timeout = self.timeout if timeout is None else timeout
        with waiting_for('the other side to close the connection to the raw peer', timeout):
            self.closed.wait()

    def pause_reading(self):
        """Stop reading from the socket (at most one more read completes): a peer that stops reading,
        so that the other side's writes back up."""
        self._may_read.clear()

    def resume_reading(self):
        """Read again after :meth:`pause_reading`."""
        self._may_read.set()

    # -- ending -------------------------------------------------------------

    def reset(self):
        """Close the connection with a TCP RST instead of a FIN."""
        if self.sock is not None:
            try:
                self.sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
            except OSError:     # already closed
                pass
        self.close()

    def close(self):
        """Close the connection (and the listening socket); idempotent."""
        if self._reader is not None:
            self._reader.kill(block=False)
        for sock in (self.sock, self.listener, self._prepared):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.closed.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return '<RawPeer %s -> %s%s>' % (self.uri, self.remote_path, ' closed' if self.closed.is_set() else '')


class RawSender:
    """An attack-test sender on a :class:`RawPeer`: connected to ``path`` at once, SEND chunks by Byte-Range.

    ``send(...)`` writes a chunk and returns its transaction id; ``wait(tid)``
    gives its response code; ``codes`` maps transaction id -> code; ``peer``
    is the underlying :class:`RawPeer`.
    """

    def __init__(self, path, session_id=None, timeout=15):
        self.peer = RawPeer(session_id=session_id, timeout=timeout).connect(path)
        self.sock = self.peer.sock
        self.closed = self.peer.closed
        self.path = self.peer.remote_path
        self.from_path = self.peer.uri

    @property
    def codes(self):
        """Transaction id -> response code, for every response read so far."""
        return {tid: frame.code for tid, frame in self.peer.responses.items()}

    def send(self, message_id, body=b'', start=1, end=None, total=None, flag='$', content_type='text/plain',
             headers=()):
        """Write one SEND chunk of ``message_id``; ``end``/``total`` default to what the body implies ('*' allowed)."""
        if end is None:
            end = start + len(body) - 1
        if total is None:
            total = end
        lines = [('Message-ID', message_id), ('Byte-Range', '%s-%s/%s' % (start, end, total))] + list(headers)
        if content_type:
            lines.append(('Content-Type', content_type))
        return self.peer.send(headers=lines, body=body if content_type else None, flag=flag)

    def bind(self, timeout=None):
        """Send the empty binding SEND; return its response code (None if the connection closed first)."""
        return self.wait(self.send(secrets.token_hex(4), content_type=None, start=1, end=0, total=0), timeout)

    def wait(self, tid, timeout=None):
        """The response code of transaction ``tid`` (None if the connection closed first).

        Raises :class:`~msrplib.testing.WaitTimeout` when none comes in time.
        """
        try:
            return self.peer.wait_response(tid, timeout).code
        except WaitTimeout:
            raise
        except AssertionError:
            return None

    def close(self):
        """Close the connection."""
        self.peer.close()
