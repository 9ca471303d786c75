"""MSRPTransport over real loopback sockets (IPv4 and IPv6, plain and TLS), and raw peers.

Every blocking call runs under ``gevent.Timeout`` so that a bug fails the test
instead of hanging it.
"""

import select
import socket as stdlib_socket
import struct

import gevent
import gevent.socket
import pytest

from msrplib import MSRPError
from msrplib import tls
from msrplib.protocol import URI, MSRPData, ByteRange, ToPathHeader, FromPathHeader, MessageIDHeader, \
    ByteRangeHeader, FailureReportHeader, SuccessReportHeader, MSRPHeader
from msrplib.transport import (
    MSRPTransport, make_response, make_report, ChunkParseError, ConnectionClosed, ConnectionDone,
    ConnectionLost, MSRPTransactionError, MSRPBadRequest, MSRPNoSuchSessionError)

from msrplib.testing.loopback import socket_pair, raw_peer_transport

T = 5  # seconds: the most any single blocking step of these tests may take

PAIRS = [('127.0.0.1', False), ('::1', False), ('127.0.0.1', True), ('::1', True)]
PAIR_IDS = ['v4', 'v6', 'v4-tls', 'v6-tls']


# ---------------------------------------------------------------------------
# Helpers

@pytest.fixture(scope='module')
def server_context():
    return tls.TLSCredentials.ephemeral().server_context()


def transport_pair(host='127.0.0.1', server_ctx=None, buffer_size=None, **kwargs):
    """Two transports over one loopback connection, each with the other's URI as remote path."""
    a, b = socket_pair(host, server_ctx, buffer_size)
    use_tls = server_ctx is not None
    ua = URI(host=host, port=a.getsockname()[1], use_tls=use_tls)
    ub = URI(host=host, port=b.getsockname()[1], use_tls=use_tls)
    ta = MSRPTransport(ua, sock=a, **kwargs)
    tb = MSRPTransport(ub, sock=b, **kwargs)
    ta.set_full_remote_path([ub])
    tb.set_full_remote_path([ua])
    return ta, tb


@pytest.fixture(params=PAIRS, ids=PAIR_IDS)
def pair(request, server_context):
    host, use_tls = request.param
    ta, tb = transport_pair(host, server_context if use_tls else None)
    yield ta, tb
    ta.loseConnection()
    tb.loseConnection()


@pytest.fixture
def plain_pair():
    ta, tb = transport_pair()
    yield ta, tb
    ta.loseConnection()
    tb.loseConnection()


@pytest.fixture
def raw_peer():
    """(transport, raw gevent socket): the test writes hand-made bytes on the raw socket."""
    transport, raw = raw_peer_transport()
    yield transport, raw
    transport.loseConnection()
    raw.close()


def raw_chunk(tid='abcd1234', body=b'hello', flag='$', to='msrp://127.0.0.1:1/local;tcp',
              frm='msrp://127.0.0.1:2/remote;tcp', extra=''):
    head = 'MSRP %s SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m1\r\n%s' % (tid, to, frm, extra)
    if body:
        head += 'Byte-Range: 1-%d/%d\r\nContent-Type: text/plain\r\n\r\n' % (len(body), len(body))
        return head.encode() + body + ('\r\n-------%s%s\r\n' % (tid, flag)).encode()
    return (head + '-------%s%s\r\n' % (tid, flag)).encode()


def read(transport, size=None):
    with gevent.Timeout(T):
        return transport.read_chunk(size)


def uri(session_id, host='127.0.0.1', port=2855):
    return URI(host=host, port=port, use_tls=False, session_id=session_id)


def request(method='SEND', to=None, frm=None, headers=(), data=b'', tid='tid12345'):
    chunk = MSRPData(tid, method=method, data=data)
    if to is not None:
        chunk.add_header(ToPathHeader(decoded=to))
    if frm is not None:
        chunk.add_header(FromPathHeader(decoded=frm))
    for header in headers:
        chunk.add_header(header)
    return chunk


# ---------------------------------------------------------------------------
# Making chunks (no connection needed)

def detached(local='me', remote='you', local_path=(), remote_path=()):
    transport = MSRPTransport(uri(local))
    transport.set_local_path(list(local_path))
    transport.set_full_remote_path(list(remote_path) + [uri(remote)])
    return transport


def test_make_chunk_paths_are_local_path_remote_path_remote_uri():
    relay_l, relay_r = uri('', 'relay-l.example'), uri('', 'relay-r.example')
    transport = detached(local_path=[relay_l], remote_path=[relay_r])
    chunk = transport.make_chunk(data=b'x')
    assert chunk.to_path == [relay_l, relay_r, uri('you')]
    assert chunk.from_path == [uri('me')]
    assert transport.full_local_path == [relay_l, uri('me')]
    assert transport.full_remote_path == [relay_r, uri('you')]
    assert transport.next_host() == relay_l
    assert detached().next_host() == uri('you')


def test_make_chunk_send_headers_and_defaults():
    transport = detached()
    chunk = transport.make_chunk(data=b'hello')
    assert chunk.method == 'SEND' and chunk.contflag == '$' and chunk.data == b'hello'
    assert chunk.byte_range == ByteRange(1, 5, 5)
    other = transport.make_chunk(data='héllo')  # str is encoded as UTF-8
    assert other.data == 'héllo'.encode('utf-8')
    assert chunk.transaction_id != other.transaction_id
    assert chunk.message_id and chunk.message_id != other.message_id
    assert b'Byte-Range: 1-5/5\r\n' in chunk.encode()


def test_make_chunk_byte_range_and_contflag():
    transport = detached()
    partial = transport.make_chunk(data=b'abc', start=11, end=13, length=100, message_id='mid')
    assert partial.byte_range == ByteRange(11, 13, 100)
    assert partial.contflag == '+' and partial.message_id == 'mid'
    last = transport.make_chunk(data=b'abc', start=98, end=100, length=100)
    assert last.contflag == '$'
    defaulted = transport.make_chunk(data=b'abc', start=5)
    assert defaulted.byte_range == ByteRange(5, 7, 7)
    aborted = transport.make_chunk(data=b'abc', contflag='#', transaction_id='mytid123')
    assert aborted.contflag == '#' and aborted.transaction_id == 'mytid123'
    assert aborted.encode().endswith(b'\r\n-------mytid123#\r\n')


def test_make_chunk_other_methods_and_responses():
    transport = detached()
    report = transport.make_chunk(method='REPORT')
    assert report.method == 'REPORT' and 'Byte-Range' not in report.headers
    assert 'Message-ID' not in report.headers
    with_id = transport.make_chunk(method='REPORT', message_id='m7')
    assert with_id.message_id == 'm7'
    response = transport.make_chunk(transaction_id='t1234567', code=200, comment='OK')
    assert response.method is None and response.code == 200 and response.comment == 'OK'
    assert response.encode().startswith(b'MSRP t1234567 200 OK\r\nTo-Path: ')


def test_make_request():
    transport = detached()
    send = transport.make_request('SEND')
    assert send.method == 'SEND' and send.byte_range == ByteRange(1, 0, 0) and send.message_id
    nickname = transport.make_request('NICKNAME')
    assert nickname.method == 'NICKNAME' and nickname.to_path == [uri('you')]
    assert 'Byte-Range' not in nickname.headers


def test_make_send_request_byte_range_star_over_2048_bytes():
    transport = detached()
    small = transport.make_send_request(data=b'x' * 2048)
    assert small.byte_range == ByteRange(1, 2048, 2048) and small.contflag == '$'
    large = transport.make_send_request(data=b'x' * 2049, message_id='big')
    assert large.byte_range == ByteRange(1, None, 2049) and large.contflag == '$'
    assert b'Byte-Range: 1-*/2049\r\n' in large.encode()
    assert large.message_id == 'big'
    first = transport.make_send_request(data=b'x' * 1000, start=1, length=5000)
    assert first.contflag == '+' and b'Byte-Range: 1-*/5000\r\n' in first.encode()
    empty = transport.make_send_request()
    assert empty.data == b'' and empty.contflag == '$'
    assert empty.encode().endswith(b'\r\n-------%s$\r\n' % empty.transaction_id.encode())


# ---------------------------------------------------------------------------
# Writing and reading over real connections

def test_write_chunk_read_chunk_both_directions(pair):
    ta, tb = pair
    for sender, receiver in ((ta, tb), (tb, ta)):
        chunk = sender.make_send_request(data=b'hello \r\n-------x$\r\n world')
        chunk.add_header(MSRPHeader('Content-Type', 'text/plain'))
        with gevent.Timeout(T):
            sender.write_chunk(chunk)
        got = read(receiver)
        assert got.method == 'SEND' and got.data == chunk.data and got.contflag == '$'
        assert got.transaction_id == chunk.transaction_id and got.message_id == chunk.message_id
        assert got.content_type == 'text/plain'
        assert got.to_path == [receiver.local_uri] and got.from_path == [sender.local_uri]
        assert receiver.check_incoming_SEND_chunk(got) is None
        assert got.segment is None


def test_write_response_and_responses_read(pair):
    ta, tb = pair
    chunk = ta.make_send_request(data=b'x')
    with gevent.Timeout(T):
        ta.write_chunk(chunk)
        tb.write_response(read(tb), 200, 'OK')
    response = read(ta)
    assert response.method is None and response.code == 200 and response.comment == 'OK'
    assert response.transaction_id == chunk.transaction_id


def test_write_sync_and_async_keep_order(plain_pair):
    ta, tb = plain_pair
    chunks = [ta.make_send_request(data=b'%d' % i) for i in range(30)]
    with gevent.Timeout(T):
        for i, chunk in enumerate(chunks):
            if i % 3 == 0:
                ta.write(chunk.encode(), sync=False)
            elif i % 3 == 1:
                ta.write(chunk.encode(), wait=False)
            else:
                ta.write(chunk.encode())
        ta.write_chunk(ta.make_send_request(data=b'last'), wait=False)
    assert [read(tb).data for _ in chunks] == [c.data for c in chunks]
    assert read(tb).data == b'last'


def test_write_sync_true_has_handed_bytes_to_the_kernel(plain_pair):
    ta, tb = plain_pair
    with gevent.Timeout(T):
        ta.write(ta.make_send_request(data=b'sync').encode(), sync=True)
    tb._sock.settimeout(0)  # no waiting allowed: the bytes must be there already
    try:
        assert read(tb).data == b'sync'
    finally:
        tb._sock.settimeout(None)


def test_many_chunks_in_one_read(raw_peer):
    transport, raw = raw_peer
    raw.sendall(b''.join(raw_chunk('tid%05d' % i, b'body %d' % i) for i in range(50)))
    for i in range(50):
        chunk = read(transport)
        assert chunk.transaction_id == 'tid%05d' % i and chunk.data == b'body %d' % i


def test_read_chunk_whole_large_chunk(pair):
    ta, tb = pair
    data = bytes(range(256)) * 4096  # 1 MiB
    sender = gevent.spawn(ta.write_chunk, ta.make_send_request(data=data))
    chunk = read(tb)
    assert chunk.data == data and chunk.segment is None and chunk.contflag == '$'
    sender.get(timeout=T)


def _stream(tb, size, expected_length, total):
    segments = []
    with gevent.Timeout(T):
        while True:
            segment = tb.read_chunk(size)
            segments.append(segment)
            if segment.contflag != '+' or sum(len(s.data) for s in segments) >= expected_length:
                break
    return segments


@pytest.mark.parametrize('size', [65536, 0, 1000000])
def test_read_chunk_size_streams_5MiB_in_segments(pair, size):
    ta, tb = pair
    data = (bytes(range(251)) * 21000)[:5 * 1024 * 1024]
    chunk = ta.make_chunk(data=data, start=1001, end=1000 + len(data), length=1000 + len(data) + 7,
                          message_id='stream')
    assert chunk.contflag == '+'
    sender = gevent.spawn(ta.write_chunk, chunk)
    segments = _stream(tb, size, len(data), None)
    sender.get(timeout=T)
    assert len(segments) > 1
    assert [s.segment for s in segments] == list(range(1, len(segments) + 1))
    assert [s.contflag for s in segments] == ['+'] * len(segments)  # the real chunk ends with '+'
    assert b''.join(s.data for s in segments) == data
    position = 1001
    for s in segments:
        assert s.transaction_id == chunk.transaction_id and s.message_id == 'stream'
        assert s.byte_range.start == position and s.byte_range.total == len(data) + 1007
        if s.data:
            assert s.byte_range.end == position + len(s.data) - 1
        assert size == 0 or len(s.data) >= size or s is segments[-1]
        position += len(s.data)


def test_read_chunk_size_last_segment_has_real_flag(pair):
    ta, tb = pair
    data = b'z' * (3 * 1024 * 1024)
    sender = gevent.spawn(ta.write_chunk, ta.make_chunk(data=data))
    segments = []
    with gevent.Timeout(T):
        while not segments or segments[-1].contflag == '+':
            segments.append(tb.read_chunk(100000))
    sender.get(timeout=T)
    assert segments[-1].contflag == '$'
    assert all(s.contflag == '+' for s in segments[:-1])
    assert b''.join(s.data for s in segments) == data
    assert [s.segment for s in segments] == list(range(1, len(segments) + 1))
    # the chunk after a segmented one is read normally
    with gevent.Timeout(T):
        ta.write_chunk(ta.make_send_request(data=b'next'))
    after = read(tb, 100000)
    assert after.data == b'next' and after.segment is None and after.contflag == '$'


def test_read_chunk_size_zero_and_small_chunks(raw_peer):
    transport, raw = raw_peer
    raw.sendall(raw_chunk('tid00001', b'abc'))
    chunk = read(transport, 0)
    # a chunk that arrives whole is returned whole, whatever the size hint
    assert chunk.data == b'abc' and chunk.contflag == '$'
    raw.sendall(raw_chunk('tid00002', b''))
    assert read(transport, 0).data == b''
    body = b'0123456789' * 10
    data = raw_chunk('tid00003', body)
    split = data.index(body) + 60
    raw.sendall(data[:split])
    first = read(transport, 0)  # what surely is body comes out at once (not a possible end-line tail)
    assert first.segment == 1 and first.contflag == '+' and first.data and body[:60].startswith(first.data)
    assert first.byte_range == ByteRange(1, len(first.data), 100)
    raw.sendall(data[split:])
    rest = []
    while not rest or rest[-1].contflag == '+':
        rest.append(read(transport, 0))
    assert first.data + b''.join(s.data for s in rest) == body
    assert rest[-1].contflag == '$' and rest[-1].segment == 1 + len(rest)


def test_max_chunk_size_exceeded_then_connection_lost(plain_pair):
    ta, tb = plain_pair
    tb.max_chunk_size = 100000
    sender = gevent.spawn(ta.write_chunk, ta.make_send_request(data=b'x' * 1000000))
    with pytest.raises(ChunkParseError), gevent.Timeout(T):
        tb.read_chunk()
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        tb.read_chunk()
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        tb.read_chunk(1000)
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        tb.write(b'more')
    assert not tb.connected
    sender.join(timeout=T)
    assert sender.successful() or isinstance(sender.exception, ConnectionClosed)
    assert isinstance(ChunkParseError('x'), MSRPError)


def test_max_chunk_size_does_not_limit_segmented_reads(plain_pair):
    ta, tb = plain_pair
    tb.max_chunk_size = 100000
    data = b'y' * 1000000
    sender = gevent.spawn(ta.write_chunk, ta.make_send_request(data=data))
    segments = []
    with gevent.Timeout(T):
        while not segments or segments[-1].contflag == '+':
            segments.append(tb.read_chunk(50000))
    sender.get(timeout=T)
    assert b''.join(s.data for s in segments) == data


# ---------------------------------------------------------------------------
# Raw peers: split input, garbage, closing, resetting

def _send_split(raw, data, position):
    raw.sendall(data[:position])
    gevent.sleep(0.002)  # let the reader consume the first part in its own recv()
    raw.sendall(data[position:])


@pytest.mark.parametrize('body', [
    b'plain body',
    b'body with \r\n-------abcd1234 inside and \r\n-------abcd1234X\r\n too',
    b'\r\n-------other99$\r\n',
    b'ends with a partial marker \r\n-------abcd123',
], ids=['plain', 'fake-end-lines', 'other-tid-end-line', 'partial-marker-at-end'])
def test_chunk_split_at_every_position_of_the_end_line(raw_peer, body):
    transport, raw = raw_peer
    data = raw_chunk('abcd1234', body)
    end_line = data.rindex(b'\r\n-------abcd1234$\r\n')
    positions = range(end_line - 2, len(data))
    with gevent.Timeout(T):
        for position in positions:
            writer = gevent.spawn(_send_split, raw, data, position)
            chunk = transport.read_chunk()
            assert chunk.data == body and chunk.contflag == '$' and chunk.transaction_id == 'abcd1234'
            writer.get()


def test_chunk_split_at_every_position_byte_by_byte_with_segments(raw_peer):
    transport, raw = raw_peer
    body = b'a\r\n-------abcd1234+x\r\n-'
    data = raw_chunk('abcd1234', body, flag='+') + raw_chunk('efgh5678', b'')

    def trickle():
        for i in range(len(data)):
            raw.sendall(data[i:i + 1])
            gevent.sleep(0.0005)

    writer = gevent.spawn(trickle)
    got = []
    with gevent.Timeout(T):
        while sum(len(c.data) for c in got) < len(body):
            got.append(transport.read_chunk(0))
        empty = transport.read_chunk(0)
        if empty.transaction_id == 'abcd1234':
            # the end-line came after the last body byte was handed out: an empty last segment
            assert empty.data == b'' and empty.contflag == '+' and empty.segment == len(got) + 1
            empty = transport.read_chunk(0)
        writer.get()
    assert b''.join(c.data for c in got) == body and got[-1].contflag == '+'
    assert [c.segment for c in got] == list(range(1, len(got) + 1))
    assert [c.byte_range.start for c in got] == [1 + sum(len(c.data) for c in got[:i]) for i in range(len(got))]
    assert empty.transaction_id == 'efgh5678' and empty.data == b''


def test_garbage_returns_none_then_connection_lost(raw_peer):
    transport, raw = raw_peer
    raw.sendall(b'GET / HTTP/1.1\r\nHost: example\r\n\r\n')
    assert read(transport) is None
    assert not transport.connected
    for _ in range(2):
        with pytest.raises(ConnectionLost), gevent.Timeout(T):
            transport.read_chunk()
    with pytest.raises(ConnectionLost):
        transport.write(b'x')


def test_garbage_after_a_valid_chunk(raw_peer):
    transport, raw = raw_peer
    raw.sendall(raw_chunk('tid00001', b'ok'))
    assert read(transport).data == b'ok'
    raw.sendall(b'\x00\xff\xfe binary garbage\r\n')
    assert read(transport) is None
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        transport.read_chunk()


def test_malformed_chunk_raises_chunk_parse_error_then_connection_lost(raw_peer):
    transport, raw = raw_peer
    raw.sendall(b'MSRP abcd1234 SEND\r\nTo-Path msrp://h/x;tcp\r\n\r\nbody\r\n-------abcd1234$\r\n')
    with pytest.raises(ChunkParseError), gevent.Timeout(T):
        transport.read_chunk()
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        transport.read_chunk()
    # the connection is really closed: the peer sees EOF
    with gevent.Timeout(T):
        assert raw.recv(100) == b''


def test_peer_closes_cleanly_connection_done_every_call(pair):
    ta, tb = pair
    with gevent.Timeout(T):
        ta.write_chunk(ta.make_send_request(data=b'before close'))
    ta.loseConnection()
    assert read(tb).data == b'before close'  # what arrived before the close is still delivered
    for _ in range(3):
        with pytest.raises(ConnectionDone), gevent.Timeout(T):
            tb.read_chunk()
    with pytest.raises(ConnectionDone):
        tb.write(b'x')
    assert not tb.connected


def test_peer_closes_in_the_middle_of_a_chunk_connection_lost(raw_peer):
    transport, raw = raw_peer
    raw.sendall(raw_chunk('abcd1234', b'x' * 100)[:-10])
    gevent.sleep(0.01)
    raw.close()
    for _ in range(2):
        with pytest.raises(ConnectionLost), gevent.Timeout(T):
            transport.read_chunk()


def test_reset_mid_chunk_connection_lost(raw_peer):
    transport, raw = raw_peer
    raw.sendall(raw_chunk('abcd1234', b'x' * 100)[:60])
    gevent.sleep(0.01)
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
    raw.close()  # sends RST
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        transport.read_chunk()
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        transport.read_chunk()


def test_reset_while_reading_segments(raw_peer):
    transport, raw = raw_peer
    raw.sendall(raw_chunk('abcd1234', b'x' * 1000)[:500])
    assert read(transport, 0).segment == 1
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
    raw.close()
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        transport.read_chunk(0)


def test_lose_connection(pair):
    ta, tb = pair
    ta.loseConnection(wait=True)
    ta.loseConnection()  # twice is harmless
    assert not ta.connected
    with pytest.raises(ConnectionDone), gevent.Timeout(T):
        ta.read_chunk()
    with pytest.raises(ConnectionDone):
        ta.write_chunk(ta.make_send_request())
    with pytest.raises(ConnectionDone), gevent.Timeout(T):
        tb.read_chunk()


def test_lose_connection_wakes_a_blocked_reader(plain_pair):
    ta, tb = plain_pair
    reader = gevent.spawn(ta.read_chunk)
    gevent.sleep(0.01)
    ta.loseConnection()
    with pytest.raises(ConnectionDone):
        reader.get(timeout=T)


def test_lose_connection_flushes_queued_writes(plain_pair):
    ta, tb = plain_pair
    for i in range(5):
        ta.write_chunk(ta.make_send_request(data=b'%d' % i), wait=False)
    ta.loseConnection()
    assert [read(tb).data for _ in range(5)] == [b'0', b'1', b'2', b'3', b'4']
    with pytest.raises(ConnectionDone), gevent.Timeout(T):
        tb.read_chunk()


@pytest.mark.parametrize('host', ['127.0.0.1', '::1'])
def test_getHost_getPeer(host):
    ta, tb = transport_pair(host)
    try:
        assert ta.getHost().host == host and tb.getPeer().host == host
        assert ta.getHost().port == tb.getPeer().port == ta._sock.getsockname()[1]
        assert ta.getPeer().port == tb.getHost().port == tb._sock.getsockname()[1]
        assert ta.getHost().type == 'TCP'
    finally:
        ta.loseConnection()
        tb.loseConnection()


def test_logger_is_replaceable_and_sees_chunks(plain_pair):
    ta, tb = plain_pair
    seen = []

    class Recorder:
        def sent_chunk(self, chunk, transport):
            seen.append(('sent', chunk.transaction_id))

        def received_chunk(self, chunk, transport):
            seen.append(('received', chunk.transaction_id))

    ta.logger = tb.logger = Recorder()
    chunk = ta.make_send_request(data=b'x')
    with gevent.Timeout(T):
        ta.write_chunk(chunk)
    read(tb)
    assert seen == [('sent', chunk.transaction_id), ('received', chunk.transaction_id)]


# ---------------------------------------------------------------------------
# check_incoming_SEND_chunk

def test_check_incoming_SEND_chunk_ok_and_400():
    transport = detached()
    assert transport.check_incoming_SEND_chunk(request(to=[uri('me')], frm=[uri('you')])) is None
    for chunk in (request(frm=[uri('you')]), request(to=[uri('me')]), request()):
        error = transport.check_incoming_SEND_chunk(chunk)
        assert isinstance(error, MSRPBadRequest) and error.code == 400
    bad = request(frm=[uri('you')])
    bad.add_header(ToPathHeader('not a uri'))
    error = transport.check_incoming_SEND_chunk(bad)
    assert error.code == 400 and isinstance(error, MSRPTransactionError)


def test_check_incoming_SEND_chunk_481_on_mismatch():
    transport = detached()
    for chunk in (request(to=[uri('other')], frm=[uri('you')]),
                  request(to=[uri('me')], frm=[uri('stranger')]),
                  request(to=[uri('me', port=9999)], frm=[uri('you')]),
                  request(to=[uri('me', host='10.0.0.1')], frm=[uri('you')]),
                  request(to=[uri('relay'), uri('me')], frm=[uri('you')])):
        error = transport.check_incoming_SEND_chunk(chunk)
        assert isinstance(error, MSRPNoSuchSessionError) and error.code == 481, chunk


def test_check_incoming_SEND_chunk_through_relays():
    relay_l, relay_r = uri('', 'relay-l.example'), uri('', 'relay-r.example')
    transport = detached(local_path=[relay_l], remote_path=[relay_r])
    chunk = request(to=[uri('me')], frm=[relay_l, relay_r, uri('you')])
    assert transport.check_incoming_SEND_chunk(chunk) is None


def test_check_incoming_SEND_chunk_sessmatch_compares_session_ids_only():
    transport = detached()
    transport.use_sessmatch = True
    natted = request(to=[URI(host='192.0.2.7', port=40000, use_tls=False, session_id='me')],
                     frm=[URI(host='198.51.100.9', port=1234, use_tls=False, session_id='you')])
    assert transport.check_incoming_SEND_chunk(natted) is None
    assert detached().check_incoming_SEND_chunk(natted).code == 481  # without sessmatch: hosts differ
    assert transport.check_incoming_SEND_chunk(request(to=[uri('nope')], frm=[uri('you')])).code == 481
    assert transport.check_incoming_SEND_chunk(request(to=[uri('me')], frm=[uri('nope')])).code == 481
    assert transport.check_incoming_SEND_chunk(request(to=[uri('me')])).code == 400


def test_check_incoming_SEND_chunk_sessmatch_constructor_argument():
    transport = MSRPTransport(uri('me'), use_sessmatch=True)
    transport.set_full_remote_path([uri('you')])
    chunk = request(to=[uri('me', port=1)], frm=[uri('you', port=2)])
    assert transport.check_incoming_SEND_chunk(chunk) is None


# ---------------------------------------------------------------------------
# make_response and make_report

HOPS_FROM = [uri('', 'relay1.example'), uri('', 'relay2.example'), uri('sender')]
HOPS_TO = [uri('', 'relay3.example'), uri('receiver')]


def test_make_response_to_SEND_is_hop_by_hop():
    chunk = request(to=HOPS_TO, frm=HOPS_FROM, tid='tid99999')
    response = make_response(chunk, 200, 'OK')
    assert response.transaction_id == 'tid99999' and response.code == 200 and response.comment == 'OK'
    assert response.method is None
    assert response.to_path == [HOPS_FROM[0]]
    assert response.from_path == [HOPS_TO[0]]
    assert response.encode().startswith(b'MSRP tid99999 200 OK\r\nTo-Path: msrp://relay1.example:2855;tcp\r\n')


def test_make_response_to_other_methods_uses_the_whole_from_path():
    chunk = request(method='NICKNAME', to=HOPS_TO, frm=HOPS_FROM)
    response = make_response(chunk, 403, 'Forbidden')
    assert response.to_path == HOPS_FROM
    assert response.from_path == [HOPS_TO[0]]
    assert response.code == 403


@pytest.mark.parametrize('mode, code, answered', [
    ('yes', 200, True), ('yes', 400, True), ('partial', 200, False), ('partial', 481, True),
    ('no', 200, False), ('no', 400, False), (None, 200, True), (None, 415, True),
])
def test_make_response_follows_failure_report(mode, code, answered):
    headers = [FailureReportHeader(mode)] if mode else []
    chunk = request(to=[uri('me')], frm=[uri('you')], headers=headers)
    assert (make_response(chunk, code, 'comment') is not None) == answered


def test_make_response_never_raises_on_bad_headers():
    chunk = request(headers=[ToPathHeader('garbage here'), FromPathHeader('more garbage'),
                             FailureReportHeader('maybe')])
    response = make_response(chunk, 400, 'Bad Request')
    assert response.code == 400 and response.headers['To-Path'].encoded == 'more'
    assert make_response(request(), 400, 'Bad Request').code == 400  # no paths at all


def test_transport_write_response_honours_failure_report(plain_pair):
    ta, tb = plain_pair
    quiet = ta.make_send_request(data=b'q')
    quiet.add_header(FailureReportHeader('no'))
    loud = ta.make_send_request(data=b'l')
    with gevent.Timeout(T):
        ta.write_chunk(quiet)
        ta.write_chunk(loud)
        tb.write_response(read(tb), 200, 'OK')  # nothing is sent
        tb.write_response(read(tb), 200, 'OK')
    assert read(ta).transaction_id == loud.transaction_id


def _send_with(success=None, failure=None, data=b'hello', byte_range=None, contflag='$'):
    headers = [MessageIDHeader('msg1')]
    if success is not None:
        headers.append(SuccessReportHeader(success))
    if failure is not None:
        headers.append(FailureReportHeader(failure))
    if byte_range is not None:
        headers.append(ByteRangeHeader(byte_range))
    chunk = request(to=HOPS_TO, frm=HOPS_FROM, headers=headers, data=data)
    chunk.contflag = contflag
    return chunk


def test_make_report_success():
    report = make_report(_send_with(success='yes', byte_range='1-5/5'), 200, 'OK')
    assert report.method == 'REPORT'
    assert report.to_path == HOPS_FROM and report.from_path == [HOPS_TO[0]]
    assert report.message_id == 'msg1'
    assert report.byte_range == ByteRange(1, 5, 5)
    assert report.status.code == 200 and report.status.comment == 'OK'
    assert b'Status: 000 200 OK\r\n' in report.encode()
    assert report.transaction_id != 'tid12345'


def test_make_report_status_is_a_Status_namedtuple():
    """Regression: make_report stored a bare tuple, so report.status.code raised AttributeError."""
    report = make_report(_send_with(failure='yes', byte_range='1-5/5'), 415, 'Unsupported media type')
    assert report.status.code == 415 and report.status.comment == 'Unsupported media type'


def test_make_report_byte_range_of_a_later_chunk():
    report = make_report(_send_with(success='yes', byte_range='101-*/1000', data=b'x' * 50, contflag='+'),
                         200, 'OK')
    assert report.byte_range == ByteRange(101, 150, 1000)
    unknown_total = make_report(_send_with(success='yes', byte_range='1-*/*', data=b'abc'), 200, 'OK')
    assert unknown_total.byte_range == ByteRange(1, 3, 3)


@pytest.mark.parametrize('success, failure, code, sent', [
    ('yes', None, 200, True), ('no', None, 200, False), (None, None, 200, False),
    (None, None, 415, True), (None, 'yes', 481, True), (None, 'partial', 481, True), (None, 'no', 481, False),
    ('yes', 'no', 200, True),
])
def test_make_report_follows_success_and_failure_report(success, failure, code, sent):
    report = make_report(_send_with(success=success, failure=failure, byte_range='1-5/5'), code, 'comment')
    assert (report is not None) == sent
    if sent:
        assert report.status == (code, 'comment')


# ---------------------------------------------------------------------------
# Binding

def test_bind_and_accept_binding(pair):
    ta, tb = pair
    with gevent.Timeout(T):
        passive = gevent.spawn(tb.accept_binding, [ta.local_uri])
        ta.bind([tb.local_uri])
        passive.get()
        ta.write_chunk(ta.make_send_request(data=b'after binding'))
        tb.write_chunk(tb.make_send_request(data=b'and back'))
    assert read(tb).data == b'after binding'
    assert read(ta).data == b'and back'
    assert ta.full_remote_path == [tb.local_uri] and tb.full_remote_path == [ta.local_uri]


def test_bind_refused_with_481(plain_pair):
    ta, tb = plain_pair
    passive = gevent.spawn(tb.accept_binding, [uri('somebody-else')])
    with pytest.raises(MSRPNoSuchSessionError) as info, gevent.Timeout(T):
        ta.bind([tb.local_uri])
    assert info.value.code == 481
    with pytest.raises(MSRPNoSuchSessionError):
        passive.get(timeout=T)


def test_bind_refused_with_other_code_raises_transaction_error(plain_pair):
    ta, tb = plain_pair

    def refuse():
        tb.write_response(tb.read_chunk(), 506, 'Session already bound')

    gevent.spawn(refuse)
    with pytest.raises(MSRPTransactionError) as info, gevent.Timeout(T):
        ta.bind([tb.local_uri])
    assert info.value.code == 506 and 'already bound' in str(info.value)


def test_both_sides_bind_at_once(pair):
    """Two active sides over one connection (RFC 6135): each sends a binding SEND and answers the other's."""
    ta, tb = pair
    with gevent.Timeout(T):
        binds = [gevent.spawn(ta.bind, [tb.local_uri]), gevent.spawn(tb.bind, [ta.local_uri])]
        gevent.joinall(binds, raise_error=True)
        ta.write_chunk(ta.make_send_request(data=b'a to b'))
        tb.write_chunk(tb.make_send_request(data=b'b to a'))
    assert read(tb).data == b'a to b'
    assert read(ta).data == b'b to a'


def test_bind_keeps_chunks_that_arrive_before_its_response(plain_pair):
    """Regression: bind() re-read its own put-back chunks forever (a busy loop no timeout could stop)."""
    ta, tb = plain_pair

    def peer():
        binding = tb.read_chunk()
        tb.write_chunk(tb.make_send_request(data=b'early 1'))
        tb.write_chunk(tb.make_chunk(method='NICKNAME'))
        tb.write_response(binding, 200, 'OK')

    gevent.spawn(peer)
    with gevent.Timeout(T):
        ta.bind([tb.local_uri])
    assert read(ta).data == b'early 1'
    assert read(ta).method == 'NICKNAME'


def test_both_sides_bind_with_a_peer_binding_that_carries_a_body(plain_pair):
    ta, tb = plain_pair

    def peer():
        tb.write_chunk(tb.make_send_request(data=b'binding with body'))
        ours = tb.read_chunk()
        tb.write_response(ours, 200, 'OK')

    gevent.spawn(peer)
    with gevent.Timeout(T):
        ta.bind([tb.local_uri])
    chunk = read(ta)
    assert chunk.data == b'binding with body' and ta.check_incoming_SEND_chunk(chunk) is None


def test_binding_send_with_body_is_delivered_by_next_read_chunk(pair):
    ta, tb = pair
    chunk = ta.make_send_request(data=b'first message')
    with gevent.Timeout(T):
        ta.write_chunk(chunk)
        tb.accept_binding([ta.local_uri])
    delivered = read(tb)
    assert delivered.data == b'first message' and delivered.transaction_id == chunk.transaction_id
    # accept_binding did not answer it: its reader does, so the sender gets exactly one response
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.05):
        ta.read_chunk()
    with gevent.Timeout(T):
        tb.write_response(delivered, 200, 'OK')
        tb.write_chunk(tb.make_send_request(data=b'reply'))
        ta.write_chunk(ta.make_send_request(data=b'second'))
    response = read(ta)
    assert response.code == 200 and response.transaction_id == chunk.transaction_id
    assert read(ta).data == b'reply'
    assert read(tb).data == b'second'


def test_accept_binding_answers_other_requests_before_binding(plain_pair):
    ta, tb = plain_pair
    nickname = ta.make_chunk(method='NICKNAME')
    with gevent.Timeout(T):
        ta.write_chunk(nickname)
        passive = gevent.spawn(tb.accept_binding, [ta.local_uri])
        response = ta.read_chunk()
        assert response.transaction_id == nickname.transaction_id and response.code == 400
        ta.bind([tb.local_uri])
        passive.get()


def test_accept_binding_sessmatch(plain_pair):
    ta, tb = plain_pair
    tb.use_sessmatch = True
    # the peer's SDP advertises other hosts and ports (a NAT): only the session-ids must match
    advertised = URI(host='192.0.2.1', port=5, use_tls=False, session_id=ta.local_uri.session_id)
    tb.local_uri = URI(host='192.0.2.2', port=6, use_tls=False, session_id=tb.local_uri.session_id)
    with gevent.Timeout(T):
        passive = gevent.spawn(tb.accept_binding, [advertised])
        ta.bind([tb.local_uri])
        passive.get()


def test_bind_when_peer_closes(plain_pair):
    ta, tb = plain_pair

    def close_after_reading():
        tb.read_chunk()
        tb.loseConnection()

    gevent.spawn(close_after_reading)
    with pytest.raises(ConnectionDone), gevent.Timeout(T):
        ta.bind([tb.local_uri])


# ---------------------------------------------------------------------------
# Responses written as bytes (no MSRPData) are the bytes make_response() gives

RESPONSE_PATHS = ['msrp://a.example:1/x;tcp', 'msrps://b.example:2/y;tcp msrp://c.example:3/z;tcp', 'bogus', '',
                  '  msrp://d.example:4/w;tcp  ']


@pytest.mark.parametrize('method', ['SEND', 'REPORT', 'NICKNAME', 'FILE_OFFSET'])
def test_response_bytes_equal_make_response_encode(method):
    from msrplib.transport import _response_bytes, _GENERAL
    from msrplib.protocol import MSRPParser
    compared = 0
    for to in RESPONSE_PATHS + [None]:
        for frm in RESPONSE_PATHS + [None]:
            for failure_report in (None, 'yes', 'no', 'partial', 'bogus'):
                made = MSRPData('tid12345', method=method)
                if to is not None:
                    made.add_header(MSRPHeader('To-Path', to))
                if frm is not None:
                    made.add_header(MSRPHeader('From-Path', frm))
                if failure_report is not None:
                    made.add_header(MSRPHeader('Failure-Report', failure_report))
                parsed = MSRPParser().feed(made.encode())[0][1]
                for chunk in (made, parsed):
                    for code, comment in ((200, 'OK'), (400, 'Bad Request'), (481, None), (413, 'Stop it')):
                        expected = make_response(chunk, code, comment)
                        data = _response_bytes(chunk, code, comment)
                        assert data is not _GENERAL
                        assert data == (None if expected is None else expected.encode())
                        compared += 1
    assert compared == 2 * 6 * 6 * 5 * 4


@pytest.mark.parametrize('method', ['SEND', 'REPORT'])
def test_response_bytes_of_untouched_parsed_chunks(method):
    # _response_bytes reads a parsed chunk's path texts without making header objects, from a cache keyed by
    # the texts: a fresh chunk, the first time (cold cache) and again (warm), gives make_response()'s bytes,
    # and a chunk whose path was changed after parsing is not answered from the cache.
    from msrplib import transport
    from msrplib.protocol import MSRPParser
    compared = 0
    for to in RESPONSE_PATHS + [None]:
        for frm in RESPONSE_PATHS + [None]:
            made = MSRPData('tid12345', method=method)
            if to is not None:
                made.add_header(MSRPHeader('To-Path', to))
            if frm is not None:
                made.add_header(MSRPHeader('From-Path', frm))
            encoded = made.encode()
            expected = make_response(MSRPParser().feed(encoded)[0][1], 200, 'OK').encode()
            transport._FIRST_URI_STR.clear()
            for _ in range(2):
                chunk = MSRPParser().feed(encoded)[0][1]
                assert type(chunk._raw.get('From-Path', '')) is str  # untouched
                assert transport._response_bytes(chunk, 200, 'OK') == expected
                compared += 1
            if frm is not None:
                chunk = MSRPParser().feed(encoded)[0][1]
                chunk._header('From-Path').encoded = 'msrp://changed.example:9/q;tcp'
                assert b'changed.example' in transport._response_bytes(chunk, 200, 'OK')
                assert transport._response_bytes(chunk, 200, 'OK') == make_response(chunk, 200, 'OK').encode()
                compared += 1
    assert compared == 6 * 6 * 2 + 6 * 5


def test_response_bytes_leave_unusual_values_to_make_response():
    from msrplib.transport import _response_bytes, _GENERAL
    chunk = MSRPData('tid12345', method='SEND')
    chunk.add_header(MSRPHeader('From-Path', 'msrp://a.example:1/x;tcp'))
    assert _response_bytes(chunk, 200, 'line\r\nbreak') is _GENERAL
    assert _response_bytes(MSRPData('t\u00e9d12345', method='SEND'), 200, 'OK') is _GENERAL


def test_replaced_logger_still_sees_responses_as_chunks(plain_pair):
    ta, tb = plain_pair
    seen = []

    class Recorder:
        def sent_chunk(self, chunk, transport):
            seen.append((chunk.code, chunk.transaction_id))

        def received_chunk(self, chunk, transport):
            pass

    tb.logger = Recorder()
    chunk = ta.make_send_request(data=b'x')
    with gevent.Timeout(T):
        ta.write_chunk(chunk)
        incoming = read(tb)
        tb.write_response(incoming, 200, 'OK')
        response = read(ta)
    assert response.code == 200 and response.transaction_id == chunk.transaction_id
    assert seen == [(200, chunk.transaction_id)]


# ---------------------------------------------------------------------------
# write_buffers: vectored writes, bodies not joined

def _read_exactly(transport_sock, size):
    received = bytearray()
    with gevent.Timeout(T):
        while len(received) < size:
            data = transport_sock.recv(1 << 20)
            assert data, 'connection closed after %d bytes' % len(received)
            received += data
    return bytes(received)


@pytest.mark.parametrize('host,use_tls', PAIRS, ids=PAIR_IDS)
def test_write_buffers_sends_the_concatenation(host, use_tls, server_context):
    ta, tb = transport_pair(host, server_context if use_tls else None, buffer_size=16384)
    try:
        assert ta._can_sendmsg is (not use_tls)  # TLS joins them: the record layer copies anyway
        buffers = [b'head', b'', bytearray(b'mutable'), memoryview(b'xxview-of-bytesxx')[2:-2], b''] + \
            [bytes([i % 251]) * (i % 7) for i in range(1500)] + [os_random(3 * 1024 * 1024), b'tail']
        expected = b''.join(bytes(buffer) for buffer in buffers)
        # the peer reads only after the writer has filled its receive window: sendmsg takes a part of the
        # buffers at a time, often ending inside one
        writer = gevent.spawn(ta.write_buffers, buffers)
        gevent.sleep(0.05)
        assert _read_exactly(tb._sock, len(expected)) == expected
        with gevent.Timeout(T):
            writer.get()
    finally:
        ta.loseConnection()
        tb.loseConnection()


def test_write_buffers_keeps_order_with_pending_writes(plain_pair):
    ta, tb = plain_pair
    ta.write(b'first-', sync=False)
    ta.write_buffers([b'second-', b'third'])
    assert _read_exactly(tb._sock, 17) == b'first-second-third'


def test_write_buffers_after_close_raises_the_closure(plain_pair):
    ta, tb = plain_pair
    ta.loseConnection()
    with pytest.raises(ConnectionDone):
        ta.write_buffers([b'x'])


def test_write_buffers_to_a_vanished_peer_is_connection_lost(plain_pair):
    ta, tb = plain_pair
    tb._sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
    tb.loseConnection()  # an RST for ta's writes
    with pytest.raises(ConnectionLost), gevent.Timeout(T):
        for _ in range(200):
            ta.write_buffers([b'x' * 65536, b'y' * 65536])
            gevent.sleep(0.001)
    assert not ta.connected


def os_random(size):
    import os
    return os.urandom(size)


# ---------------------------------------------------------------------------
# Read sizes follow what the socket hands out

def test_reads_grow_for_bulk_and_shrink_back_for_chat(plain_pair):
    from msrplib.transport import _FIRST_READ_SIZE
    ta, tb = plain_pair
    assert tb._next_read_size == _FIRST_READ_SIZE
    body = b'z' * 65536
    writer = gevent.spawn(lambda: [ta.write_chunk(ta.make_send_request(data=body)) for _ in range(128)])
    with gevent.Timeout(T):
        gevent.sleep(0.1)  # the socket fills up before the reader starts
        for _ in range(128):
            assert read(tb).data == body
        writer.get()
    grown = tb._next_read_size
    assert _FIRST_READ_SIZE < grown <= MSRPTransport.read_size
    for _ in range(12):  # small messages, each read alone: back down to the first size, no lower
        ta.write_chunk(ta.make_send_request(data=b'hi'))
        assert read(tb).data == b'hi'
    assert tb._next_read_size == _FIRST_READ_SIZE


def test_reads_never_ask_more_than_read_size(plain_pair):
    ta, tb = plain_pair
    tb.read_size = 1000  # an instance value below the first read size
    ta.write_chunk(ta.make_send_request(data=b'q' * 50000))
    with gevent.Timeout(T):
        assert read(tb).data == b'q' * 50000
    assert tb._next_read_size <= 1000


# A peer that ends a message with '#' and closes at once (msrp sendfile at Ctrl-C): the receiver's next write
# fails, and what the peer sent before the closure is still read -- the '#' included -- before the closure.


def _reset(raw):
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
    raw.close()  # sends RST
    gevent.sleep(0.01)


@pytest.mark.parametrize('parsed', [True, False], ids=['parsed', 'in-the-kernel'])
def test_a_failed_write_keeps_what_the_peer_sent_before(raw_peer, parsed):
    transport, raw = raw_peer
    first = raw_chunk('tid00001', b'x' * 100, flag='+')
    abort = raw_chunk('tid00002', b'', flag='#', extra='Byte-Range: 101-100/500\r\nFailure-Report: no\r\n')
    if parsed:
        raw.sendall(first + abort)   # one read parses both
        gevent.sleep(0.01)
        chunk = read(transport)
    else:
        raw.sendall(first)
        chunk = read(transport)
        raw.sendall(abort)           # not read yet: in the kernel's buffer
        gevent.sleep(0.01)
    assert chunk.transaction_id == 'tid00001'
    _reset(raw)
    with pytest.raises(ConnectionLost, match='Write failed'):
        transport.write_response(chunk, 200, 'OK')
    assert not transport.connected
    last = read(transport)
    assert (last.transaction_id, last.contflag) == ('tid00002', '#')
    for _ in range(2):
        with pytest.raises(ConnectionLost), gevent.Timeout(T):
            transport.read_chunk()
    with pytest.raises(ConnectionLost):
        transport.write(b'x')


def test_a_failed_write_wakes_a_blocked_reader_with_what_the_peer_sent_before(raw_peer):
    transport, raw = raw_peer
    raw.sendall(raw_chunk('tid00001', b'x' * 100, flag='+'))
    chunk = read(transport)
    reader = gevent.spawn(transport.read_chunk)
    gevent.sleep(0.01)                   # the reader waits in recv
    # from here until the write, nothing yields: the reader gets no chance to read the '#' itself
    raw.sendall(raw_chunk('tid00002', b'', flag='#', extra='Failure-Report: no\r\n'))
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
    raw.close()  # sends RST
    poller = select.poll()
    poller.register(transport._sock.fileno(), select.POLLIN)  # the RST has arrived
    assert poller.poll(T * 1000)         # (blocks the hub: the reader stays where it is)
    with pytest.raises(ConnectionLost, match='Write failed'):
        transport.write_response(chunk, 200, 'OK')
    assert not reader.ready()
    assert reader.get(timeout=T).contflag == '#'
