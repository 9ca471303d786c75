"""Hostile peers over real sockets: raw gevent sockets speak bytes at a real
MSRPTransport, GreenMSRPSession, AcceptorDirect or MSRPServer, and each test
asserts what the library does.

Peak memory (RSS, from /proc/self/status) of the endless-input and flood
tests is printed (run with ``-s`` to see it) and checked against generous
bounds; timings are never asserted.
"""

import os
import socket as stdlib_socket
import struct

import gevent
import gevent.pool
import gevent.socket
import pytest

from msrplib import MSRPError
from msrplib.connect import (
    AcceptorDirect, ConnectorDirect, MSRPServer, MSRPBindSessionTimeout, MSRPConnectTimeout,
    MSRPIncomingConnectTimeout)
from msrplib.protocol import URI, LimitExceeded, ChunkParseError
from msrplib.session import GreenMSRPSession, MSRPSession
from msrplib.transport import (
    MSRPTransport, ConnectionClosed, ConnectionDone, ConnectionLost, MSRPNoSuchSessionError)

from msrplib.testing import RawPeer
from msrplib.testing.loopback import raw_peer_transport

T = 10  # seconds any single blocking step may take
MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# Helpers

def rss():
    """Resident set size of this process, in bytes."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Samples RSS every few milliseconds while the block runs: ``.peak - .start`` is the growth."""

    def __init__(self, label):
        self.label = label
        self.start = self.peak = 0
        self._job = None

    def sample(self):
        self.peak = max(self.peak, rss())

    def _run(self):
        while True:
            self.sample()
            gevent.sleep(0.005)

    def __enter__(self):
        self.start = self.peak = rss()
        self._job = gevent.spawn(self._run)
        return self

    def __exit__(self, *exc):
        self._job.kill()
        self.sample()
        print('\n[memory] %s: RSS %.1f MiB at start, peak %.1f MiB (+%.1f MiB)' % (
            self.label, self.start / MiB, self.peak / MiB, self.growth / MiB))

    @property
    def growth(self):
        return self.peak - self.start


@pytest.fixture
def raw_peer():
    """(transport, raw gevent socket): the test writes hand-made bytes on the raw socket."""
    transport, raw = raw_peer_transport()
    yield transport, raw
    transport.loseConnection()
    raw.close()


def send_forever(sock, head, piece, limit=256 * MiB):
    """Write ``head`` then ``piece`` over and over until the peer stops us; return the bytes written."""
    sent = 0
    try:
        sock.sendall(head)
        sent += len(head)
        while sent < limit:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    return sent


def reset(sock):
    """Close ``sock`` with a TCP RST instead of a FIN."""
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


class SessionPair:
    """A GreenMSRPSession (``session``, on ``passive``) bound to a :class:`~msrplib.testing.RawPeer` (``peer``)."""

    def __init__(self, session_class=GreenMSRPSession, **kwargs):
        acceptor = AcceptorDirect()
        passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        self.peer = RawPeer(timeout=T)
        accepting = gevent.spawn(acceptor.complete, [URI.parse(self.peer.prepare())])
        self.peer.connect(passive_path)
        assert self.peer.bind().code == 200
        self.passive = accepting.get(timeout=T)
        self.session = session_class(self.passive, **kwargs)

    def close(self):
        self.session.reader_job.kill(block=False)
        self.peer.close()
        self.passive.loseConnection()
        gevent.joinall([self.session.reader_job], timeout=T)

    def send_raw(self, tid, headers=None, body=b'hello', to_path=None, from_path=None, method='SEND'):
        """Write a request by hand from the raw peer (``headers``: list of str or bytes lines)."""
        if headers is None:
            headers = ['Message-ID: m-%s' % tid, 'Byte-Range: 1-%d/%d' % (len(body), len(body)),
                       'Content-Type: text/plain']
        self.peer.send(method, body=body or None, headers=headers, tid=tid, to_path=to_path, from_path=from_path)

    def response(self):
        """The next response the raw peer reads (requests in between are skipped)."""
        while True:
            frame = self.peer.next_frame()
            if frame.code is not None:
                return frame

    def still_works(self, tid='check001'):
        """The session answers and delivers a good SEND (so it survived what came before)."""
        self.send_raw(tid, body=b'still alive')
        response = self.response()
        assert (response.transaction_id, response.code) == (tid, 200)
        with gevent.Timeout(T):
            while True:
                chunk = self.session.receive_chunk()
                if chunk.data == b'still alive':
                    return


@pytest.fixture
def session_pair():
    pair = SessionPair()
    yield pair
    pair.close()


# ---------------------------------------------------------------------------
# Endless and oversized input at a transport

def test_endless_start_line_is_refused_at_max_line_length(raw_peer):
    transport, raw = raw_peer
    with PeakRSS('endless start line') as memory:
        sender = gevent.spawn(send_forever, raw, b'MSRP ', b'a' * 65536)
        with pytest.raises(LimitExceeded) as info, gevent.Timeout(T):
            transport.read_chunk()
        assert info.value.limit == 'max_line_length'
        assert not transport.connected
        with pytest.raises(ConnectionLost):
            transport.read_chunk()
        sent = sender.get(timeout=T)  # the sender is stopped by the closed connection
    assert sent < 64 * MiB
    assert memory.growth < 64 * MiB


def test_endless_header_line_is_refused_at_max_line_length(raw_peer):
    transport, raw = raw_peer
    with PeakRSS('endless header line') as memory:
        sender = gevent.spawn(send_forever, raw, b'MSRP abcd1234 SEND\r\nTo-Path: msrp://', b'x' * 1000)
        with pytest.raises(LimitExceeded) as info, gevent.Timeout(T):
            transport.read_chunk()
        # (a read that brings more than max_header_block bytes at once breaks that limit as well)
        assert info.value.limit in ('max_line_length', 'max_header_block')
        sender.get(timeout=T)
    assert not transport.connected
    assert memory.growth < 64 * MiB


def test_ten_thousand_headers_are_refused_at_max_headers(raw_peer):
    transport, raw = raw_peer
    head = b'MSRP abcd1234 SEND\r\n' + b''.join(b'X-H%d: v\r\n' % i for i in range(10000)) + b'\r\nbody'
    sender = gevent.spawn(send_forever, raw, head, b'', limit=0)
    with pytest.raises(LimitExceeded) as info, gevent.Timeout(T):
        transport.read_chunk()
    assert info.value.limit in ('max_headers', 'max_header_block')  # both are broken: whichever is seen first
    assert not transport.connected
    sender.get(timeout=T)


def test_ten_thousand_headers_accepted_when_the_limits_allow_them(raw_peer):
    transport, raw = raw_peer
    transport._parser = type(transport._parser)(max_headers=20000, max_header_block=1 * MiB)
    head = b'MSRP abcd1234 SEND\r\n' + b''.join(b'X-H%d: v\r\n' % i for i in range(10000)) + \
        b'\r\nbody\r\n-------abcd1234$\r\n'
    raw.sendall(head)
    with gevent.Timeout(T):
        chunk = transport.read_chunk()
    assert len(chunk.headers) == 10000 and chunk.data == b'body'


def test_endless_body_without_size_stops_at_max_chunk_size_and_closes(raw_peer):
    transport, raw = raw_peer
    transport.max_chunk_size = 4 * MiB
    head = b'MSRP abcd1234 SEND\r\nTo-Path: msrp://a/b;tcp\r\nFrom-Path: msrp://c/d;tcp\r\n\r\n'
    with PeakRSS('endless body, read_chunk() with max_chunk_size=4 MiB') as memory:
        sender = gevent.spawn(send_forever, raw, head, b'z' * 65536)
        with pytest.raises(ChunkParseError) as info, gevent.Timeout(T):
            transport.read_chunk()
        assert 'max_chunk_size' in str(info.value)
        sender.get(timeout=T)
    assert not transport.connected
    with pytest.raises(ConnectionLost):
        transport.read_chunk()
    assert memory.growth < 64 * MiB


def test_endless_body_with_size_streams_in_bounded_memory(raw_peer):
    transport, raw = raw_peer
    transport.max_chunk_size = 4 * MiB  # does not apply to read_chunk(size)
    head = b'MSRP abcd1234 SEND\r\nTo-Path: msrp://a/b;tcp\r\nFrom-Path: msrp://c/d;tcp\r\n' \
           b'Byte-Range: 1-*/*\r\n\r\n'
    total = 256 * MiB
    received = 0
    with PeakRSS('endless body, read_chunk(65536), 256 MiB streamed') as memory:
        sender = gevent.spawn(send_forever, raw, head, b'z' * 65536, limit=2 * total)
        with gevent.Timeout(50):
            while received < total:
                chunk = transport.read_chunk(65536)
                assert chunk.contflag == '+' and chunk.data
                assert len(chunk.data) <= 65536 + transport.read_size
                assert chunk.byte_range.start == received + 1
                received += len(chunk.data)
    assert transport.connected
    transport.loseConnection()
    sender.get(timeout=T)
    assert memory.growth < 64 * MiB


def test_reset_in_the_middle_of_a_chunk_is_connection_lost(raw_peer):
    transport, raw = raw_peer
    raw.sendall(b'MSRP abcd1234 SEND\r\nTo-Path: msrp://a/b;tcp\r\nFrom-Path: msrp://c/d;tcp\r\n\r\nhalf a bo')
    gevent.sleep(0.05)
    reset(raw)
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        transport.read_chunk()
    with pytest.raises(ConnectionLost):
        transport.read_chunk()


def test_reset_in_the_middle_of_a_chunk_gives_a_session_connection_lost_and_local_responses(session_pair):
    pair = session_pair
    responses = []
    pair.session.send_chunk(pair.session.make_message(b'unanswered', 'text/plain'), responses.append)
    pair.peer.send(body=b'half a body', stop_at=-20)       # the end never comes
    gevent.sleep(0.05)
    pair.peer.reset()
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        pair.session.receive_chunk()
    assert [response.code for response in responses] == [408]


# ---------------------------------------------------------------------------
# Nonsense headers at a session

@pytest.mark.parametrize('byte_range', ['5-3/10', '0-5/5', '1-10/5', 'a-b/c', '1-5', '', '-1-5/5', '1-5/5/5',
                                        '1 - 5/5', '99999999999999999999-1/1', '\u0661-5/5'])
def test_nonsense_byte_range_gets_400(session_pair, byte_range):
    session_pair.send_raw('br000001', ['Message-ID: m1', 'Byte-Range: ' + byte_range, 'Content-Type: text/plain'])
    response = session_pair.response()
    assert (response.transaction_id, response.code) == ('br000001', 400)
    session_pair.still_works()


@pytest.mark.parametrize('header', ['To-Path', 'From-Path'])
@pytest.mark.parametrize('value', ['http://example.com/', 'msrp://', 'msrp://host:99999/s;tcp', 'garbage',
                                   'msrp://a.example.com/s', 'msrp://[::1/s;tcp', 'msrp://h/s;tcp msrp://',
                                   b'msrp://\xff\xfe/s;tcp', ''])
def test_invalid_uri_in_a_path_gets_400(session_pair, header, value):
    paths = {'to_path': None, 'from_path': None}
    paths['to_path' if header == 'To-Path' else 'from_path'] = value
    session_pair.send_raw('uri00001', **paths)
    response = session_pair.response()
    assert (response.transaction_id, response.code) == ('uri00001', 400)
    session_pair.still_works()


def test_missing_paths_get_400(session_pair):
    session_pair.send_raw('nopath01', to_path=False)
    assert session_pair.response().code == 400
    session_pair.send_raw('nopath02', from_path=False)
    assert session_pair.response().code == 400
    session_pair.still_works()


@pytest.mark.parametrize('line', [b'Content-Type: text/\xff\xfe', b'Message-ID: \xc3\x28', b'X-Custom: \xed\xa0\x80',
                                  b'Content-Description: \xff', b'Success-Report: y\xffs'])
def test_header_value_that_is_not_utf8_gets_400(session_pair, line):
    headers = [b'Message-ID: m1', b'Byte-Range: 1-5/5', b'Content-Type: text/plain']
    name = line.split(b':')[0]
    headers = [header for header in headers if not header.startswith(name + b':')] + [line]
    session_pair.send_raw('utf00001', headers)
    response = session_pair.response()
    assert (response.transaction_id, response.code) == ('utf00001', 400)
    session_pair.still_works()


def test_response_comment_that_is_not_utf8_reaches_the_response_cb(session_pair):
    pair = session_pair
    responses = []
    chunk = pair.session.make_message(b'hi', 'text/plain')
    pair.session.send_chunk(chunk, responses.append)
    request = pair.peer.expect(method='SEND')
    pair.peer.respond(request, 200, b'\xff\xfeOK')
    with gevent.Timeout(T):
        while not responses:
            gevent.sleep(0.01)
    assert responses[0].code == 200
    pair.still_works()


# ---------------------------------------------------------------------------
# Transactions that make no sense

def test_response_to_a_transaction_never_sent_is_ignored(session_pair):
    pair = session_pair
    for code in (200, 408, 481, 999):
        pair.peer.respond('nosuch%03d' % code, code, 'Whatever')
    pair.still_works()
    assert pair.session.incoming.empty()


def test_repeated_transaction_id_from_the_peer_is_answered_each_time(session_pair):
    pair = session_pair
    pair.send_raw('same0001', body=b'first')
    pair.send_raw('same0001', body=b'second')
    assert [pair.response().transaction_id for _ in range(2)] == ['same0001', 'same0001']
    with gevent.Timeout(T):
        assert [pair.session.receive_chunk().data for _ in range(2)] == [b'first', b'second']
    pair.still_works()


def test_response_repeated_by_the_peer_reaches_the_response_cb_once(session_pair):
    pair = session_pair
    responses = []
    pair.session.send_chunk(pair.session.make_message(b'hi', 'text/plain'), responses.append)
    request = pair.peer.expect(method='SEND')
    for _ in range(3):
        pair.peer.respond(request, 200)
    pair.still_works()
    assert [response.code for response in responses] == [200]


def test_report_for_an_unknown_message_id_is_not_answered_and_harms_nothing(session_pair):
    pair = session_pair
    pair.send_raw('rep00001', ['Message-ID: never-sent', 'Byte-Range: 1-5/5', 'Status: 000 200 OK'], body=b'',
                  method='REPORT')
    pair.send_raw('rep00002', ['Message-ID: never-sent', 'Byte-Range: 1-5/5', 'Status: nonsense'], body=b'',
                  method='REPORT')
    pair.send_raw('check001', body=b'still alive')
    response = pair.response()  # REPORTs are never answered: the first response is the SEND's
    assert response.transaction_id == 'check001'
    with gevent.Timeout(T):
        first = pair.session.receive_chunk()
    # a REPORT the session cannot match goes to the application, which may ignore it; a bad one is dropped
    assert first.method == 'REPORT' and first.message_id == 'never-sent'
    with gevent.Timeout(T):
        assert pair.session.receive_chunk().data == b'still alive'


# ---------------------------------------------------------------------------
# Connecting and binding

@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 0.5)
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 0.5)
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 0.5)


def eof_within(sock, seconds=T):
    """True when the peer closes ``sock`` (EOF or reset) within ``seconds``."""
    try:
        with gevent.Timeout(seconds):
            while sock.recv(65536):
                pass
    except gevent.Timeout:
        return False
    except OSError:
        pass
    return True


def test_binding_send_with_a_wrong_path_gets_481(short_timeouts):
    acceptor = AcceptorDirect()
    uri = URI(host='127.0.0.1', port=0, use_tls=False)
    acceptor.prepare(uri)
    raw = gevent.socket.create_connection(('127.0.0.1', uri.port))
    client = MSRPTransport(URI(host='127.0.0.1', port=2855, use_tls=False), sock=raw)
    accepting = gevent.spawn(acceptor.complete, [client.local_uri])
    wrong = URI(host='127.0.0.1', port=uri.port, use_tls=False, session_id='not-the-acceptors')
    with pytest.raises(MSRPNoSuchSessionError), gevent.Timeout(T):
        client.bind([wrong])
    with pytest.raises(MSRPNoSuchSessionError):
        accepting.get(timeout=T)
    assert eof_within(raw)
    client.loseConnection()


@pytest.mark.parametrize('first_bytes', [b'', b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'])
def test_tls_handshake_that_never_completes_times_out_at_the_acceptor(short_timeouts, first_bytes):
    acceptor = AcceptorDirect()
    uri = URI(host='127.0.0.1', port=0, use_tls=True)
    acceptor.prepare(uri)
    raw = gevent.socket.create_connection(('127.0.0.1', uri.port))
    raw.sendall(first_bytes)
    try:
        with pytest.raises(MSRPIncomingConnectTimeout), gevent.Timeout(T):
            acceptor.complete([URI(host='127.0.0.1', port=1, use_tls=True)])
        assert eof_within(raw)  # the half-made connection is closed, not left to the garbage collector
    finally:
        raw.close()


def test_tls_peer_that_never_answers_the_handshake_times_out_at_the_connector(short_timeouts):
    listener = gevent.socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    try:
        connector = ConnectorDirect()
        connector.prepare(URI(host='127.0.0.1', port=None, use_tls=True))
        with pytest.raises(MSRPConnectTimeout), gevent.Timeout(T):
            connector.complete([URI(host='127.0.0.1', port=listener.getsockname()[1], use_tls=True)])
        connector.cleanup()
        peer, _ = listener.accept()
        assert eof_within(peer)
        peer.close()
    finally:
        listener.close()


def test_silent_peer_at_the_acceptor_hits_the_bind_timeout_and_is_closed(short_timeouts):
    acceptor = AcceptorDirect()
    uri = URI(host='127.0.0.1', port=0, use_tls=False)
    acceptor.prepare(uri)
    with RawPeer(timeout=T) as peer:
        peer.connect([uri])          # connects, then says nothing
        with pytest.raises(MSRPBindSessionTimeout), gevent.Timeout(T):
            acceptor.complete([URI(host='127.0.0.1', port=1, use_tls=False)])
        peer.wait_closed()


@pytest.mark.parametrize('use_tls', [False, True], ids=['tcp', 'tls'])
def test_server_drops_a_silent_or_stalled_handshake_peer_and_keeps_serving(short_timeouts, use_tls):
    server = MSRPServer()
    try:
        uri = URI(host='127.0.0.1', port=0, use_tls=use_tls)
        path = server.prepare(uri)
        silent = gevent.socket.create_connection(('127.0.0.1', uri.port))
        stalled = gevent.socket.create_connection(('127.0.0.1', uri.port))
        stalled.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' if use_tls else b'MSRP abcd')
        connector = ConnectorDirect(expected_fingerprint=server.fingerprint)
        connector_path = connector.prepare(URI(host='127.0.0.1', port=None, use_tls=use_tls))
        with gevent.Timeout(T):
            passive = gevent.spawn(server.complete, connector_path)
            active = connector.complete(path)
            passive = passive.get()
        assert eof_within(silent) and eof_within(stalled)
        active.write_chunk(active.make_send_request(data=b'ping'))
        with gevent.Timeout(T):
            assert passive.read_chunk().data == b'ping'
        active.loseConnection()
        passive.loseConnection()
        silent.close()
        stalled.close()
    finally:
        server.close()


# ---------------------------------------------------------------------------
# A peer that stops reading

class SmallQueueSession(GreenMSRPSession):
    OUTGOING_QUEUE_SIZE = 8


def test_peer_that_stops_reading_blocks_send_chunk_and_bounds_memory():
    pair = SessionPair(SmallQueueSession)
    pair.peer.pause_reading()
    try:
        transport = pair.passive
        transport.max_pending_write_size = 256 * 1024
        body = b'q' * 65536
        largest_write = len(pair.session.make_message(body, 'text/plain').encode()) * 64  # a writer batch
        queued = []
        highest_pending = [0]

        def sender():
            while True:
                pair.session.send_chunk(pair.session.make_message(body, 'text/plain'), lambda response: None)
                queued.append(1)
                highest_pending[0] = max(highest_pending[0], transport._pending_size)

        with PeakRSS('peer stops reading, sender blocked') as memory:
            job = gevent.spawn(sender)
            previous = -1
            while len(queued) != previous:  # until send_chunk blocks for good
                previous = len(queued)
                gevent.sleep(0.5)
                highest_pending[0] = max(highest_pending[0], transport._pending_size)
            assert not job.dead
        assert pair.session.outgoing.qsize() <= SmallQueueSession.OUTGOING_QUEUE_SIZE
        assert highest_pending[0] <= transport.max_pending_write_size + largest_write
        # everything accepted so far is in the kernel's buffers, the writer's hands or the queue: a few MiB
        assert len(queued) * len(body) < 64 * MiB
        assert memory.growth < 64 * MiB
        print('[peer stops reading] send_chunk accepted %d chunks of 64 KiB before blocking' % len(queued))
        job.kill()
    finally:
        pair.close()


def test_peer_that_sends_but_never_reads_responses_is_slowed_down_not_buffered():
    pair = SessionPair()
    pair.peer.pause_reading()
    try:
        transport = pair.passive
        transport.max_pending_write_size = 64 * 1024
        stop = []
        sent = [0]

        def flood():
            # many small SENDs whose 200 responses the peer never reads
            chunk = b''.join(
                b'MSRP f%07d SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m\r\nByte-Range: 1-1/1\r\n'
                b'Content-Type: text/plain\r\n\r\nx\r\n-------f%07d$\r\n' % (
                    i, pair.peer.remote_path.encode(), pair.peer.uri.encode(), i)
                for i in range(100))
            try:
                while not stop:
                    pair.peer.send_raw(chunk)
                    sent[0] += 100
            except OSError:
                pass

        def drain():
            while True:
                pair.session.receive_chunk()

        drainer = gevent.spawn(drain)
        with PeakRSS('peer never reads its responses') as memory:
            job = gevent.spawn(flood)
            previous = -1
            highest = 0
            while sent[0] != previous:  # until the flood is held up by the session not reading
                previous = sent[0]
                for _ in range(10):
                    gevent.sleep(0.05)
                    highest = max(highest, transport._pending_size)
            assert not job.dead
        assert highest <= transport.max_pending_write_size + 1000
        assert memory.growth < 64 * MiB
        print('[peer never reads responses] %d SENDs accepted before the peer was held up' % sent[0])
        stop.append(1)
        job.kill()
        drainer.kill()
    finally:
        pair.close()


# ---------------------------------------------------------------------------
# A flood of garbage connections at an MSRPServer

GARBAGE = [
    lambda sock: sock.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
    lambda sock: sock.sendall(os.urandom(300)),
    lambda sock: sock.sendall(b'MSRP abcd1234 SEND\r\n' + b'X: y\r\n' * 100),
    lambda sock: sock.sendall(b'MSRP abcd1234 SEND\r\nTo-Path: msrp://nowhere/x;tcp\r\n'
                              b'From-Path: msrp://a/b;tcp\r\n-------abcd1234$\r\n'),
    lambda sock: sock.sendall(b'MSRP abcd1234 200 OK\r\n-------abcd1234$\r\n'),
    lambda sock: sock.sendall(b'MSRP ' + b'a' * 20000),
    lambda sock: None,         # connect, then close at once
    reset,                      # connect, then reset
    lambda sock: sock.sendall(b'\x16\x03\x01\x02\x00\x01'),
    lambda sock: sock.sendall(b'\x00' * 5000),
]


def test_a_thousand_garbage_connections_while_a_session_keeps_working(monkeypatch):
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 2)
    server = MSRPServer()
    try:
        uri = URI(host='127.0.0.1', port=0, use_tls=False)
        path = server.prepare(uri)
        connector = ConnectorDirect()
        connector_path = connector.prepare(URI(host='127.0.0.1', port=None, use_tls=False))
        with gevent.Timeout(T):
            passive = gevent.spawn(server.complete, connector_path)
            active = connector.complete(path)
            passive = passive.get()
        sender, receiver = MSRPSession(active), GreenMSRPSession(passive)
        delivered = []
        done = []

        def chat():
            while not done:
                sender.deliver_message(b'message %d' % len(delivered), 'text/plain')
                delivered.append(receiver.receive_chunk().data)

        def garbage(i):
            try:
                sock = gevent.socket.create_connection(('127.0.0.1', uri.port))
            except OSError:
                return 'refused'
            try:
                GARBAGE[i % len(GARBAGE)](sock)
            except OSError:
                pass
            try:
                with gevent.Timeout(5):
                    while sock.recv(65536):
                        pass
                outcome = 'closed'
            except gevent.Timeout:
                outcome = 'still open'
            except OSError:
                outcome = 'closed'
            sock.close()
            return outcome

        with PeakRSS('1000 garbage connections at an MSRPServer') as memory:
            chatter = gevent.spawn(chat)
            pool = gevent.pool.Pool(100)
            with gevent.Timeout(120):
                outcomes = pool.map(garbage, range(1000))
            done.append(1)
            chatter.join(timeout=T)
        assert chatter.successful(), chatter.exception
        counts = {outcome: outcomes.count(outcome) for outcome in set(outcomes)}
        print('[flood] outcomes %s; %d messages delivered meanwhile' % (counts, len(delivered)))
        assert counts == {'closed': 1000}
        assert len(delivered) > 0 and delivered == [b'message %d' % i for i in range(len(delivered))]
        assert receiver.connected and sender.connected
        assert memory.growth < 200 * MiB
        assert server._rendezvous == {} or list(server._rendezvous) == []
        sender.shutdown()
        receiver.shutdown()
    finally:
        server.close()


def test_peer_flooding_chunks_before_answering_the_binding_is_cut_off_at_max_early_chunks(raw_peer):
    # regression: bind() kept every chunk that arrived before the response to its binding SEND, without
    # a bound, for as long as the bind timeout let a peer send them
    transport, raw = raw_peer
    chunk = (b'MSRP early%03d SEND\r\nTo-Path: msrp://127.0.0.1:1/local;tcp\r\nFrom-Path: msrp://127.0.0.1:2/remote;tcp'
             b'\r\nMessage-ID: m\r\nByte-Range: 1-1/1\r\nContent-Type: text/plain\r\n\r\nx\r\n-------early%03d$\r\n')
    flood = gevent.spawn(send_forever, raw, b'', b''.join(chunk % (i, i) for i in range(100)), limit=10 * MiB)
    with pytest.raises(ChunkParseError) as info, gevent.Timeout(T):
        transport.bind([URI(host='127.0.0.1', port=2, use_tls=False, session_id='remote')])
    assert 'max_early_chunks' in str(info.value)
    assert not transport._pushback  # what was kept is dropped with the connection
    assert not transport.connected
    flood.get(timeout=T)


def test_no_chunk_comes_out_after_max_chunk_size_closed_the_connection():
    # Regression: events parsed in the same read as the oversized body were still handed out afterwards.
    import gevent as _gevent
    from gevent import socket as _socket
    from msrplib.protocol import URI as _URI
    from msrplib.transport import MSRPTransport as _Transport, ConnectionClosed as _Closed
    from msrplib.protocol import ChunkParseError as _ParseError
    left, right = _socket.socketpair()
    local = _URI(host='127.0.0.1', port=1, session_id='a', use_tls=False)
    transport = _Transport(local, sock=left)
    transport.max_chunk_size = 100
    big = (b'MSRP t1234 SEND\r\nTo-Path: msrp://127.0.0.1:1/a;tcp\r\nFrom-Path: msrp://127.0.0.1:2/b;tcp\r\n'
           b'Message-ID: m\r\nByte-Range: 1-200/200\r\nContent-Type: text/plain\r\n\r\n' + b'x' * 200 +
           b'\r\n-------t1234$\r\n')
    small = big.replace(b't1234', b't5678').replace(b'x' * 200, b'y').replace(b'1-200/200', b'1-1/1')
    right.sendall(big + small)
    with _gevent.Timeout(5):
        with pytest.raises(_ParseError):
            transport.read_chunk()
        for _ in range(2):
            with pytest.raises(_Closed):
                transport.read_chunk()
    right.close()


def test_tls_handshake_never_completing_is_bounded_even_without_an_incoming_timeout(monkeypatch):
    # Regression: with MSRPIncomingConnectTimeout.seconds = None (wait for a peer forever, as `msrp listen`
    # does), a peer that connected and never finished the TLS handshake held the acceptor forever.  Now it
    # is closed after MSRPConnectTimeout.seconds, and the real peer binds meanwhile.
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', None)
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 0.5)
    acceptor = AcceptorDirect()
    path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=True))
    silent = gevent.socket.create_connection(('127.0.0.1', path[0].port))
    try:
        accepting = gevent.spawn(acceptor.complete, None)
        connector = ConnectorDirect(expected_fingerprint=acceptor.fingerprint)
        connector.prepare(URI(host='127.0.0.1', port=None, use_tls=True))
        with gevent.Timeout(T):
            active = connector.complete(path)
            passive = accepting.get()
        assert eof_within(silent)
        active.loseConnection()
        passive.loseConnection()
    finally:
        acceptor.cleanup()
        silent.close()
