"""Received chunks carry chunk_header and chunk_footer: header + data + footer is what crossed the wire.

Parser tests run with both implementations (C fast path and pure Python);
transport tests use a loopback connection with a raw peer.  Also: a logger
that raises never breaks reading or binding.
"""

import logging

import gevent
import pytest
from hypothesis import given, settings, strategies as st

from msrplib.protocol import (
    BODY, CHUNK_START, ContentTypeHeader, FromPathHeader, MessageIDHeader, MSRPData, MSRPHeader, MSRPParser,
    ToPathHeader)
from msrplib.trafficlog import Logger
from msrplib.transport import ConnectionLost

from msrplib.testing.loopback import raw_peer_transport

pytestmark = pytest.mark.usefixtures('parser_implementation')

T = 5

HEAD = b'MSRP %s SEND\r\nTo-Path: msrp://127.0.0.1:2855/a;tcp\r\nFrom-Path: msrp://127.0.0.1:2856/b;tcp\r\n'

WIRE_CHUNKS = [
    # body, '$'
    HEAD % b'tid1' + b'Message-ID: m1\r\nByte-Range: 1-5/5\r\nContent-Type: text/plain\r\n\r\nhello\r\n-------tid1$\r\n',
    # body, '+' and '#', unusual spacing and an unknown header (the Python parser's path)
    HEAD % b'tid2' + b'Message-ID:m2\r\nX-Thing:   odd  \r\nContent-Type: text/plain\r\n\r\nab\r\n-------tid2+\r\n',
    HEAD % b'tid3' + b'Message-ID: m3\r\nContent-Type: text/plain\r\n\r\nx\r\n-------tid3#\r\n',
    # no body
    HEAD % b'tid4' + b'Message-ID: m4\r\n-------tid4$\r\n',
    # an empty body after the empty line
    HEAD % b'tid5' + b'Message-ID: m5\r\n\r\n\r\n-------tid5$\r\n',
    # responses: with a comment, without one, without any header
    b'MSRP tid6 200 OK\r\nTo-Path: msrp://127.0.0.1:2856/b;tcp\r\nFrom-Path: msrp://127.0.0.1:2855/a;tcp\r\n'
    b'-------tid6$\r\n',
    b'MSRP tid7 408\r\nTo-Path: msrp://127.0.0.1:2856/b;tcp\r\n-------tid7$\r\n',
    b'MSRP tid8 200 OK\r\n-------tid8$\r\n',
    # a body holding a false end-line
    HEAD % b'tid9' + b'Content-Type: text/plain\r\n\r\nx\r\n-------tid9 not yet\r\n-------tid9$\r\n',
]
STREAM = b''.join(WIRE_CHUNKS)


def reassemble(events):
    """The wire bytes of each chunk, from its events: chunk_header + body + chunk_footer."""
    out = []
    for kind, value in events:
        if kind is CHUNK_START:
            chunk, body = value, []
        elif kind is BODY:
            body.append(value)
        else:
            out.append(chunk.chunk_header + b''.join(body) + chunk.chunk_footer)
    return out


def test_header_body_footer_is_the_wire_all_at_once():
    assert reassemble(MSRPParser().feed(STREAM)) == WIRE_CHUNKS


@pytest.mark.parametrize('step', [1, 2, 7, 64])
def test_header_body_footer_is_the_wire_in_any_split(step):
    parser = MSRPParser()
    events = []
    for i in range(0, len(STREAM), step):
        events += parser.feed(STREAM[i:i + step])
    assert reassemble(events) == WIRE_CHUNKS


def test_the_header_ends_with_the_empty_line_or_the_crlf_before_the_end_line():
    chunks = [value for kind, value in MSRPParser().feed(STREAM) if kind is CHUNK_START]
    assert chunks[0].chunk_header.endswith(b'Content-Type: text/plain\r\n\r\n')
    assert chunks[0].chunk_footer == b'\r\n-------tid1$\r\n'
    assert chunks[3].chunk_header.endswith(b'Message-ID: m4\r\n')
    assert chunks[3].chunk_footer == b'-------tid4$\r\n'
    assert chunks[7].chunk_header == b'MSRP tid8 200 OK\r\n'
    assert all(type(chunk.chunk_header) is bytes for chunk in chunks)


def test_chunks_made_here_have_none():
    chunk = MSRPData('abcd', method='SEND', data=b'x')
    assert chunk.chunk_header is None and chunk.chunk_footer is None
    received = [v for k, v in MSRPParser().feed(WIRE_CHUNKS[0]) if k is CHUNK_START][0]
    copy = received.copy()
    assert copy.chunk_header is None and copy.chunk_footer is None


# -- through the transport

@pytest.fixture
def peer():
    transport, raw = raw_peer_transport()
    yield transport, raw
    transport.loseConnection()
    raw.close()


def test_read_chunk_gives_the_wire_bytes(peer):
    transport, raw = peer
    with gevent.Timeout(T):
        raw.sendall(STREAM)
        got = [transport.read_chunk() for _ in WIRE_CHUNKS]
    assert [c.chunk_header + c.data + c.chunk_footer for c in got] == WIRE_CHUNKS


def test_virtual_segments_share_the_wire_bytes_of_their_chunk(peer):
    # read_chunk(size): the first segment has the head, the last one the footer, those between
    # neither (b''); joined over the segments, header + data + footer is the chunk's wire bytes.
    transport, raw = peer
    body = bytes(range(256)) * 40
    wire = (HEAD % b'big1' + b'Message-ID: m1\r\nByte-Range: 1-%d/%d\r\nContent-Type: application/octet-stream\r\n\r\n'
            % (len(body), len(body)) + body + b'\r\n-------big1$\r\n')
    segments = []
    with gevent.Timeout(T):
        def send_in_pieces():
            for i in range(0, len(wire), 1000):
                raw.sendall(wire[i:i + 1000])
                gevent.sleep(0.005)  # the reader takes each piece before the next one comes

        sender = gevent.spawn(send_in_pieces)
        while not segments or segments[-1].contflag != '$':
            segments.append(transport.read_chunk(1000))
        sender.get()
    assert len(segments) > 2
    assert b''.join(s.chunk_header + s.data + s.chunk_footer for s in segments) == wire
    assert segments[0].chunk_header == wire[:wire.index(b'\r\n\r\n') + 4]
    assert segments[0].chunk_footer == b''
    assert all(s.chunk_header == b'' and s.chunk_footer == b'' for s in segments[1:-1])
    assert segments[-1].chunk_header == b'' and segments[-1].chunk_footer == b'\r\n-------big1$\r\n'


class RaisingLogger(Logger):
    """A tracing logger with a bug: its chunk methods raise."""

    def __init__(self):
        Logger.__init__(self)
        self.calls = []

    def received_chunk(self, chunk, transport):
        self.calls.append(('received', chunk.chunk_header))
        raise AttributeError('tracing logger bug')

    def sent_chunk(self, chunk, transport):
        self.calls.append(('sent', chunk))
        raise RuntimeError('tracing logger bug')


def test_a_raising_logger_does_not_break_reading_or_writing(peer, caplog):
    transport, raw = peer
    transport.logger = RaisingLogger()
    with caplog.at_level(logging.ERROR, logger='msrplib'), gevent.Timeout(T):
        raw.sendall(WIRE_CHUNKS[0])
        chunk = transport.read_chunk()
        transport.write_response(chunk, 200, 'OK')
        answer = raw.recv(65536)
    assert chunk.data == b'hello'
    assert answer.startswith(b'MSRP tid1 200 OK\r\n')
    assert [kind for kind, _ in transport.logger.calls] == ['received', 'sent']
    assert transport.logger.calls[0][1] == WIRE_CHUNKS[0][:WIRE_CHUNKS[0].index(b'\r\n\r\n') + 4]
    assert sum('tracing logger bug' in record.exc_text for record in caplog.records if record.exc_text) == 2


def test_a_raising_logger_does_not_break_binding(caplog):
    from msrplib.connect import AcceptorDirect, ConnectorDirect
    from msrplib.protocol import URI
    acceptor = AcceptorDirect(logger=RaisingLogger())
    passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
    connector = ConnectorDirect(logger=RaisingLogger())
    active_path = connector.prepare(URI(host='127.0.0.1', use_tls=False))
    with caplog.at_level(logging.ERROR, logger='msrplib'), gevent.Timeout(T):
        accepting = gevent.spawn(acceptor.complete, active_path)
        active = connector.complete(passive_path)
        passive = accepting.get()
    try:
        assert active.logger.calls and passive.logger.calls  # each side logged (and raised) while binding
        assert caplog.records
    finally:
        active.loseConnection()
        passive.loseConnection()


def test_a_raising_logger_does_not_break_the_handling_of_illegal_data(peer, caplog):
    transport, raw = peer

    class IllegalDataLogger(Logger):
        def received_illegal_data(self, data, transport):
            raise ValueError('logger bug on illegal data')

    transport.logger = IllegalDataLogger()
    with caplog.at_level(logging.ERROR, logger='msrplib'), gevent.Timeout(T):
        raw.sendall(b'GET / HTTP/1.1\r\n\r\n')
        assert transport.read_chunk() is None  # as documented: not MSRP, the connection is closed
        with pytest.raises(ConnectionLost):
            transport.read_chunk()
    assert any(record.exc_text and 'logger bug on illegal data' in record.exc_text for record in caplog.records)


@st.composite
def encoded_chunks(draw):
    """The bytes of a chunk this library encodes: request or response, with or without body and extra headers."""
    tid = draw(st.text('abcdefghij0123456789', min_size=4, max_size=12))
    if draw(st.booleans()):
        chunk = MSRPData(tid, method=draw(st.sampled_from(['SEND', 'REPORT', 'NICKNAME', 'FILE_OFFSET'])),
                         data=draw(st.binary(max_size=300)), contflag=draw(st.sampled_from('$+#')))
    else:
        chunk = MSRPData(tid, code=draw(st.sampled_from([200, 408, 481])),
                         comment=draw(st.sampled_from([None, 'OK', 'Réponse'])))
    chunk.add_header(ToPathHeader('msrp://127.0.0.1:2855/a;tcp'))
    chunk.add_header(FromPathHeader('msrp://127.0.0.1:2856/b;tcp'))
    if draw(st.booleans()):
        chunk.add_header(MessageIDHeader('m%d' % draw(st.integers(0, 99))))
    if chunk.data:
        chunk.add_header(ContentTypeHeader('application/octet-stream'))
    for name in draw(st.lists(st.sampled_from(['X-A', 'Offset', 'x-b']), max_size=3, unique=True)):
        chunk.add_header(MSRPHeader(name, draw(st.text('abc 123', min_size=1, max_size=10)).strip() or 'v'))
    return chunk.encode()


@settings(max_examples=150, deadline=None)
@given(st.lists(encoded_chunks(), min_size=1, max_size=5), st.integers(1, 97))
def test_property_header_body_footer_is_the_wire(wires, step):
    stream = b''.join(wires)
    parser = MSRPParser()
    events = []
    for i in range(0, len(stream), step):
        events += parser.feed(stream[i:i + step])
    assert reassemble(events) == wires
