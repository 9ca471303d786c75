"""The per-chunk shortcuts of a bulk transfer give what the general code gives.

A large message's chunks repeat their headers but for Byte-Range: the sender
encodes the shared header lines once per message (``OutgoingMessage``), the
receiver answers from cached response bytes (``_response_bytes``) and checks
only the Byte-Range of a chunk whose other header texts match one that
passed (``MSRPSession._check_request``); progress REPORTs go out at once.
Each test compares a shortcut with the general path, or checks what it must
not skip.
"""

import gevent
import pytest

from msrplib.message import MessageAssembler, OutgoingMessage
from msrplib.protocol import ContentDispositionHeader, MSRPHeader, MSRPParser, ParserEvent, URI
from msrplib.session import GreenMSRPSession
from msrplib.transport import MSRPTransport, _response_bytes, make_response

from test_message import Pipe
from test_session import make_pair, raw_chunk, read_response

TIMEOUT = 5


def relayed_transport():
    # A transport addressed through a relay (To-Path of two URIs), as the sender's behind one.
    transport = MSRPTransport(URI(host='127.0.0.1', port=1, use_tls=False))
    transport.set_full_remote_path([URI(host='relay.example', port=2855, session_id=''),
                                    URI(host='127.0.0.1', port=2, use_tls=False)])
    return transport


def parse(data):
    events = MSRPParser().feed(data)
    assert [kind for kind, _ in events][0] == ParserEvent.CHUNK_START and events[-1][0] == ParserEvent.CHUNK_END
    return events[0][1]


@pytest.mark.parametrize('sized', [True, False])
def test_message_chunks_encode_as_the_general_path(sized):
    data = bytes(range(256)) * 200  # 51,200 bytes: 7 chunks
    source = data if sized else Pipe(data)
    headers = [ContentDispositionHeader('attachment; filename="a b.bin"'), ('X-Note', 'same for all')]
    message = OutgoingMessage(source, 'application/octet-stream', chunk_size=8192, report_window=1 << 20,
                              failure_report='partial', headers=headers)
    transport = relayed_transport()
    shortcuts = 0
    body = []
    while True:
        chunk = message.next_chunk(transport)
        if chunk is None:
            break
        shortcuts += chunk._head_rest is not None
        wire = b''.join(chunk._encode_parts())
        assert wire == chunk.encode()  # the general path, from the chunk's header objects
        parsed = parse(wire)
        assert parsed.byte_range == chunk.byte_range and parsed.message_id == message.message_id
        assert parsed.headers['X-Note'].decoded == 'same for all'
        body.append(chunk.data)
    assert b''.join(body) == data
    assert shortcuts == 6  # every chunk but the first (which the others copy) and none of those is empty


def test_a_header_added_to_a_chunk_before_it_is_written_is_written():
    message = OutgoingMessage(b'x' * 30000, 'text/plain', chunk_size=8192)
    transport = relayed_transport()
    message.next_chunk(transport)
    chunk = message.next_chunk(transport)
    chunk.add_header(MSRPHeader('X-Late', 'yes'))
    assert b'\r\nX-Late: yes\r\n' in b''.join(chunk._encode_parts())
    chunk = message.next_chunk(transport)
    assert b'X-Late' not in b''.join(chunk._encode_parts())  # (on that chunk only)


def test_an_application_byte_range_header_is_sent_as_the_general_path_sends_it():
    message = OutgoingMessage(b'x' * 30000, 'text/plain', chunk_size=8192, headers=[('Byte-Range', '1-1/1')])
    transport = relayed_transport()
    for _ in range(4):
        chunk = message.next_chunk(transport)
        assert b''.join(chunk._encode_parts()) == chunk.encode()


def test_cached_response_bytes_are_those_of_the_general_path():
    def send(tid, from_path):
        return parse(raw_chunk(tid, 'SEND', 'msrp://127.0.0.1:2/rcv;tcp', from_path,
                               ('Message-ID: m1', 'Byte-Range: 1-3/9', 'Content-Type: text/plain'), b'abc', '+'))
    cases = [('tid1', 'msrp://relay:1;tcp msrp://a:3/snd;tcp', 200, 'OK'),
             ('tid2', 'msrp://relay:1;tcp msrp://a:3/snd;tcp', 200, 'OK'),   # from the cache
             ('tid3', 'msrp://relay:1;tcp msrp://a:3/snd;tcp', 413, 'Too large'),
             ('tid4', 'msrp://relay:1;tcp msrp://a:3/snd;tcp', 200, None),
             ('tid5', 'msrp://other:7;tcp msrp://a:3/snd;tcp', 200, 'OK')]   # another previous hop
    for tid, from_path, code, comment in cases:
        assert _response_bytes(send(tid, from_path), code, comment) == \
            make_response(send(tid, from_path), code, comment).encode()
    assert b'To-Path: msrp://other:7;tcp\r\n' in _response_bytes(send('tid6', cases[-1][1]), 200, 'OK')


@pytest.fixture
def raw_and_transport():
    pair = make_pair(False)
    yield pair.active, pair.passive
    pair.active.loseConnection()
    pair.passive.loseConnection()


@pytest.fixture
def raw_and_session(raw_and_transport):
    raw, transport = raw_and_transport
    session = GreenMSRPSession(transport, accept_types=['text/plain'])
    yield raw, session
    session.reader_job.kill(block=False)


def test_chunks_after_one_that_passed_are_still_checked(raw_and_session):
    raw, session = raw_and_session
    to_path, from_path = str(raw.remote_uri), str(raw.local_uri)

    def send(tid, start, to=to_path, byte_range=None, content_type='text/plain'):
        headers = ('Message-ID: m1', 'Byte-Range: %s' % (byte_range or '%d-%d/20' % (start, start + 4)),
                   'Content-Type: %s' % content_type)
        raw.write(raw_chunk(tid, 'SEND', to, from_path, headers, b'abcde', '+'))
        return read_response(raw).code

    with gevent.Timeout(TIMEOUT):
        assert send('aa01', 1) == 200
        assert send('aa02', 6) == 200  # the same texts: only its Byte-Range is checked
        assert send('aa03', 11, to='msrp://127.0.0.1:9/other;tcp') == 481
        assert send('aa04', 11, byte_range='11-x/20') == 400
        assert send('aa05', 11, content_type='image/png') == 415
        assert send('aa06', 11) == 200
        assert [session.receive_chunk().transaction_id for _ in range(3)] == ['aa01', 'aa02', 'aa06']


def test_progress_report_goes_out_before_the_reader_runs_out_of_input(raw_and_transport):
    # Twelve 1 KiB chunks asking for Success-Reports, all in the socket before the session reads: the reader
    # handles them without waiting for input.  The REPORT for the first 2 KiB is written then and there, not
    # once the reader runs out of input (after the responses to all twelve).
    raw, transport = raw_and_transport
    to_path, from_path = str(raw.remote_uri), str(raw.local_uri)
    raw.write(b''.join(raw_chunk('cc%02d' % i, 'SEND', to_path, from_path,
                                 ('Message-ID: big', 'Byte-Range: %d-%d/12288' % (1024 * i + 1, 1024 * (i + 1)),
                                  'Success-Report: yes', 'Content-Type: text/plain'),
                                 b'x' * 1024, '+' if i < 11 else '$') for i in range(12)))

    class Receiver(GreenMSRPSession):
        PROGRESS_REPORT_INTERVAL = 2048
        READER_YIELD_BYTES = 1 << 30

    receiver = Receiver(transport, accept_types=['text/plain'], assembler=MessageAssembler())
    order = []
    try:
        with gevent.Timeout(TIMEOUT):
            assert receiver.receive_chunk().size == 12288
            while 'cc11' not in order:
                chunk = raw.read_chunk()
                order.append(chunk.transaction_id if chunk.method is None else 'REPORT %s' % (chunk.byte_range.end,))
    finally:
        receiver.reader_job.kill(block=False)
    assert order.index('REPORT 2048') < order.index('cc11')
