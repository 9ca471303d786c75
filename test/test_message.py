"""Large messages: chunked sending (OutgoingMessage) and reassembly (MessageAssembler), over real loopback pairs."""

import errno
import gc
import hashlib
import io
import os
import random

import gevent
import pytest

from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.message import (
    FILE_BLOCK, PIECE_OVERHEAD, IncomingMessage, MessageAssembler, MessageState, OutgoingMessage, PartialBudget,
    _Ranges)
from msrplib.protocol import (
    URI, ByteRange, ByteRangeHeader, ContentTypeHeader, MSRPParser, CHUNK_START, BODY, CHUNK_END)
from msrplib.session import GreenMSRPSession, MSRPSessionError
from msrplib.transport import MSRPTransport, MSRPTransactionError, ConnectionClosed

TIMEOUT = 20


@pytest.fixture
def transports():
    with gevent.Timeout(TIMEOUT):
        acceptor = AcceptorDirect()
        connector = ConnectorDirect()
        remote = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        local = connector.prepare(URI(host='127.0.0.1', use_tls=False))
        accepting = gevent.spawn(acceptor.complete, local)
        sender = connector.complete(remote)
        receiver = accepting.get()
    yield sender, receiver
    sender.loseConnection()
    receiver.loseConnection()


def sessions(transports, **receiver_options):
    sender, receiver = transports
    return GreenMSRPSession(sender), GreenMSRPSession(receiver, **receiver_options)


def payload(size, seed=1):
    return hashlib.sha256(b'%d' % seed).digest() * (size // 32) + b'x' * (size % 32)


class RecordingTransport:
    # Stands in for a transport when only make_chunk matters.
    def __init__(self):
        a = URI(host='127.0.0.1', port=1, use_tls=False)
        b = URI(host='127.0.0.1', port=2, use_tls=False)
        self.transport = MSRPTransport(a)
        self.transport.set_full_remote_path([b])


def all_chunks(message):
    transport = RecordingTransport().transport
    chunks = []
    while True:
        chunk = message.next_chunk(transport)
        if chunk is None:
            return chunks
        chunks.append(chunk)


# -- OutgoingMessage on its own

def test_chunks_share_one_message_id_and_have_contiguous_byte_ranges():
    data = payload(10000)
    chunks = all_chunks(OutgoingMessage(data, 'application/octet-stream', chunk_size=3000))
    assert [len(c.data) for c in chunks] == [3000, 3000, 3000, 1000]
    assert len({c.message_id for c in chunks}) == 1
    assert [tuple(c.byte_range) for c in chunks] == [(1, 3000, 10000), (3001, 6000, 10000), (6001, 9000, 10000),
                                                    (9001, 10000, 10000)]
    assert [c.contflag for c in chunks] == ['+', '+', '+', '$']
    assert all(c.content_type == 'application/octet-stream' for c in chunks)
    assert b''.join(c.data for c in chunks) == data


def test_file_object_source_is_read_as_the_chunks_go():
    data = payload(50000)
    source = io.BytesIO(data)
    message = OutgoingMessage(source, 'application/octet-stream', chunk_size=10000)
    assert message.size == 50000
    transport = RecordingTransport().transport
    message.next_chunk(transport)
    assert source.tell() == 10000  # one chunk read, not the whole file


class Pipe(io.RawIOBase):
    """A source of unknown size (not seekable): Byte-Range total '*' until the last chunk."""

    def __init__(self, data):
        self.stream = io.BytesIO(data)

    def readable(self):
        return True

    def read(self, n=-1):
        return self.stream.read(n)

    def seekable(self):
        return False

    def tell(self):
        raise io.UnsupportedOperation('not seekable')


def test_source_of_unknown_size_gets_star_total_until_the_end():
    chunks = all_chunks(OutgoingMessage(Pipe(payload(2500)), 'text/plain', chunk_size=1000))
    assert [tuple(c.byte_range) for c in chunks] == [(1, 1000, None), (1001, 2000, None), (2001, 2500, 2500)]
    assert [c.contflag for c in chunks] == ['+', '+', '$']


def test_empty_message_is_one_chunk():
    chunks = all_chunks(OutgoingMessage(b'', 'text/plain'))
    assert len(chunks) == 1 and chunks[0].contflag == '$' and tuple(chunks[0].byte_range) == (1, 0, 0)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError):
        OutgoingMessage(b'x', 'text/plain', chunk_size=0)
    with pytest.raises(ValueError):
        OutgoingMessage(b'x', 'text/plain', failure_report='no')
    with pytest.raises(TypeError):
        OutgoingMessage(b'x', 'text/plain', progress_cb=42)


# -- MessageAssembler on its own

def make_chunk(message_id, data, start, total, flag='+', content_type='text/plain'):
    transport = RecordingTransport().transport
    chunk = transport.make_chunk(data=data, start=start, end=start + len(data) - 1, length=total,
                                 message_id=message_id, contflag=flag)
    chunk.add_header(ContentTypeHeader(content_type))
    return chunk


def test_assembler_reassembles_out_of_order_and_interleaved_messages():
    assembler = MessageAssembler()
    a, b = payload(3000, 1), payload(2000, 2)
    pieces = [make_chunk('A', a[2000:], 2001, 3000, '$'), make_chunk('B', b[:1000], 1, 2000),
              make_chunk('A', a[:1000], 1, 3000), make_chunk('B', b[1000:], 1001, 2000, '$'),
              make_chunk('A', a[1000:2000], 1001, 3000)]
    done = []
    for chunk in pieces:
        code, _, message = assembler.accept(chunk)
        assert code == 200
        if message is not None:
            done.append(message)
    assert [(m.message_id, m.data) for m in done] == [('B', b), ('A', a)]
    assert not assembler.partial


def test_assembler_drops_a_message_ended_with_hash():
    assembler = MessageAssembler()
    assert assembler.accept(make_chunk('A', b'x' * 100, 1, 300))[0] == 200
    assert assembler.accept(make_chunk('A', b'', 101, 300, '#'))[:1] == (200,)
    assert 'A' not in assembler.partial


def test_assembler_answers_413_beyond_the_maximum_and_keeps_refusing_that_message():
    assembler = MessageAssembler(max_message_size=1000)
    assert assembler.accept(make_chunk('A', b'x' * 500, 1, 5000))[0] == 413
    assert assembler.accept(make_chunk('A', b'x' * 500, 501, 5000))[0] == 413
    assert assembler.accept(make_chunk('B', b'x' * 1000, 1, 1000, '$'))[0] == 200


def test_assembler_limits_messages_in_progress():
    assembler = MessageAssembler(max_partial_messages=2)
    assert assembler.accept(make_chunk('A', b'x', 1, 10))[0] == 200
    assert assembler.accept(make_chunk('B', b'x', 1, 10))[0] == 200
    assert assembler.accept(make_chunk('C', b'x', 1, 10))[0] == 413


def test_assembler_streams_big_messages_to_a_file(tmp_path):
    opened = []

    def open_file(message):
        handle = open(tmp_path / ('%s.bin' % message.message_id), 'w+b')
        opened.append(handle)
        return handle

    assembler = MessageAssembler(memory_limit=1000, open_file=open_file)
    data = payload(5000)
    for start in range(0, 5000, 700):
        piece = data[start:start + 700]
        code, _, message = assembler.accept(make_chunk('M', piece, start + 1, 5000,
                                                       '$' if start + 700 >= 5000 else '+'))
        assert code == 200
    assert isinstance(message, IncomingMessage) and message.file is opened[0]
    assert message.data == data and message.sha1() == hashlib.sha1(data).digest()
    assert (tmp_path / 'M.bin').read_bytes() == data



def make_ranged_chunk(message_id, data, start, end, total, flag='+'):
    # A chunk whose Byte-Range says start-end/total whatever its body (None: '*').
    transport = RecordingTransport().transport
    chunk = transport.make_chunk(data=data, start=start, end=end, length=total, message_id=message_id,
                                 contflag=flag)
    chunk.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(start, end, total))
    chunk.add_header(ContentTypeHeader('text/plain'))
    return chunk


def test_ranges_match_a_plain_model_under_random_additions():
    rng = random.Random(7)
    for _ in range(200):
        ranges, model = _Ranges(), set()
        for _ in range(rng.randrange(1, 40)):
            start = rng.randrange(1, 120)
            end = start + rng.randrange(-1, 15)
            ranges.add(start, end)
            model.update(range(start, end + 1))
            assert ranges.total == len(model)
            expected = []
            for position in sorted(model):
                if expected and expected[-1][1] == position - 1:
                    expected[-1][1] = position
                else:
                    expected.append([position, position])
            assert ranges.intervals == [tuple(pair) for pair in expected]
            assert len(ranges) == len(expected)
            probe = rng.randrange(1, 130)
            length = rng.randrange(0, 10)
            assert ranges.covers(probe, probe + length) == all(p in model for p in range(probe, probe + length + 1))


def test_sparse_messages_cost_what_was_received_not_their_declared_size():
    # The attack of issue 17: only the last byte of 64 messages of 1 MiB each.
    assembler = MessageAssembler(budget=PartialBudget())
    for number in range(64):
        total = 1024 * 1024
        assert assembler.accept(make_chunk('M%d' % number, b'z', total, total, '$'))[0] == 200
    assert len(assembler.partial) == 64
    assert all(message.file is None for message in assembler.partial.values())
    assert assembler.memory_in_use == 64 * (1 + PIECE_OVERHEAD)
    assert sum(len(m._buffer) for m in assembler.partial.values()) == 0


def test_gaps_filled_later_give_the_whole_message_in_memory():
    assembler = MessageAssembler(budget=PartialBudget())
    data = payload(10000)
    order = list(range(0, 10000, 1000))
    random.Random(3).shuffle(order)
    message = None
    for offset in order:
        code, _, message = assembler.accept(make_chunk('M', data[offset:offset + 1000], offset + 1, 10000))
        assert code == 200
    assert message is not None and message.data == data and message.file is None
    assert assembler.memory_in_use == 0 and not assembler.partial


def test_more_fragments_than_max_fragments_gets_413_and_drops_the_message():
    budget = PartialBudget()
    assembler = MessageAssembler(max_fragments=100, budget=budget)
    for number in range(100):
        assert assembler.accept(make_chunk('M', b'a', 2 * number + 1, 1000))[0] == 200
    code, comment, _ = assembler.accept(make_chunk('M', b'a', 201, 1000))
    assert code == 413 and 'fragments' in comment
    assert 'M' not in assembler.partial and budget.memory == 0
    assert assembler.accept(make_chunk('M', b'a', 2, 1000))[0] == 413   # later chunks of it too
    # filling a gap merges fragments: a message sent in order never comes near the cap
    for number in range(500):
        assert assembler.accept(make_chunk('N', b'b', number + 1, 1000))[0] == 200
    assert len(assembler.partial['N']._received) == 1


def test_file_budget_defaults_to_256_MiB_or_four_messages_of_the_largest_size():
    # A receiver that raises max_message_size can store such a message without also raising file_budget.
    assert MessageAssembler().file_budget == 256 * 1024 * 1024
    assert MessageAssembler(max_message_size=1000).file_budget == 256 * 1024 * 1024
    assert MessageAssembler(max_message_size=4 << 30).file_budget == 16 << 30
    assert MessageAssembler(max_message_size=4 << 30, file_budget=1000).file_budget == 1000


def test_memory_budget_spills_to_a_file_and_file_budget_refuses_with_413():
    budget = PartialBudget(max_memory=None, max_files=None)
    assembler = MessageAssembler(memory_budget=3000, file_budget=20000, budget=budget)
    assert assembler.accept(make_chunk('A', b'a' * 1000, 1, 2000))[0] == 200
    assert assembler.accept(make_chunk('B', b'b' * 1000, 1, 2000))[0] == 200
    assert assembler.partial['A'].file is None and assembler.partial['B'].file is None
    assert assembler.accept(make_chunk('C', b'c' * 1000, 1, 2000))[0] == 200   # past 3000 bytes in memory
    assert assembler.partial['C'].file is not None
    assert assembler.memory_in_use == 2 * (1000 + 0) and budget.memory == assembler.memory_in_use
    assert assembler.files_in_use == 1000 + 2 * FILE_BLOCK
    code, comment, _ = assembler.accept(make_chunk('C', b'c' * 1000, 1001, 2000, '$'))
    assert code == 200  # completes: the file is no longer counted
    assert assembler.files_in_use == 0 and budget.files == 0
    big = MessageAssembler(memory_limit=100, file_budget=20000, budget=budget)
    assert big.accept(make_chunk('D', b'd' * 9000, 1, 100000))[0] == 200
    code, comment, _ = big.accept(make_chunk('D', b'd' * 9000, 9001, 100000))
    assert code == 413 and 'space' in comment
    assert big.files_in_use == 0 and not big.partial


def test_shared_budget_bounds_many_assemblers_and_is_given_back():
    budget = PartialBudget(max_memory=5000, max_files=30000)
    assemblers = [MessageAssembler(budget=budget) for _ in range(4)]
    for number, assembler in enumerate(assemblers):
        assert assembler.accept(make_chunk('M', b'x' * 2000, 1, 4000))[0] == 200
    assert budget.memory <= 5000 + 2000 + PIECE_OVERHEAD
    assert any(a.partial['M'].file is not None for a in assemblers)     # spilled: the memory budget held
    extra = MessageAssembler(budget=budget)
    assert extra.accept(make_chunk('X', b'x' * 30000, 1, 40000))[0] == 413   # the files budget held
    assemblers[0].clear()
    del assemblers[1]
    gc.collect()
    remaining = sum(a.memory_in_use for a in assemblers[1:])
    assert budget.memory == remaining
    for assembler in assemblers[1:]:
        assembler.clear()
    assert budget.memory == 0 and budget.files == 0


def test_body_longer_than_its_byte_range_gets_400_and_is_not_stored():
    assembler = MessageAssembler(budget=PartialBudget())
    code, comment, message = assembler.accept(make_ranged_chunk('A', b'x' * 5000, 1, 10, 10, '$'))
    assert (code, message) == (400, None) and 'Byte-Range' in comment
    code, _, message = assembler.accept(make_ranged_chunk('B', b'x' * 5000, 1, None, 10, '$'))
    assert (code, message) == (400, None)   # end '*' but past the total
    assert not assembler.partial
    # a body shorter than its range is an interrupted chunk (RFC 4975 7.1.1): the bytes that came count
    assert assembler.accept(make_ranged_chunk('C', b'x' * 5, 1, 10, 10))[0] == 200
    code, _, message = assembler.accept(make_ranged_chunk('C', b'y' * 5, 6, 10, 10, '$'))
    assert code == 200 and message.data == b'xxxxxyyyyy' and message.size == 10


def test_total_changed_between_chunks_gets_400():
    assembler = MessageAssembler(budget=PartialBudget())
    assert assembler.accept(make_chunk('A', b'x' * 10, 1, 100))[0] == 200
    assert assembler.accept(make_chunk('A', b'x' * 10, 11, 200))[0] == 400
    assert assembler.accept(make_ranged_chunk('T', b'x' * 5, 1, 5, 100))[0] == 200
    assert assembler.accept(make_ranged_chunk('T', b'x' * 50, 90, None, None))[0] == 400   # past the known total
    assert assembler.accept(make_ranged_chunk('B', b'x' * 50, 1, 50, None))[0] == 200
    code, _, message = assembler.accept(make_ranged_chunk('B', b'', 1, 0, None, '$'))
    assert code == 400 and message is None and 'B' not in assembler.partial


def test_on_discard_is_called_once_for_every_message_that_ends_without_completing(tmp_path):
    discarded = []
    files = []

    def open_file(message):
        handle = open(tmp_path / ('%d.part' % len(files)), 'w+b')
        files.append(handle)
        return handle

    assembler = MessageAssembler(memory_limit=10, max_message_size=1000, open_file=open_file,
                                 on_discard=discarded.append, budget=PartialBudget())
    # the same Message-ID twice: a chunk then '#', each time -- both partials are discarded
    first = None
    for _ in range(2):
        assert assembler.accept(make_chunk('A', b'x' * 100, 1, 500))[0] == 200
        first = first or assembler.partial['A']
        assert assembler.accept(make_chunk('A', b'', 101, 500, '#'))[0] == 200
    assert len(discarded) == 2 and discarded[0] is first and discarded[1] is not first
    assert all(handle.closed for handle in files)
    assert assembler.accept(make_chunk('B', b'x' * 100, 1, 5000))[0] == 413    # too large: no file at all
    assert assembler.accept(make_chunk('C', b'x' * 100, 1, 500))[0] == 200
    assembler.clear()
    assert [m.message_id for m in discarded] == ['A', 'A', 'C']


class FullDisk(io.BytesIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, 'No space left on device')


def test_write_error_ends_the_message_with_413_and_discards_it():
    discarded = []
    assembler = MessageAssembler(memory_limit=10, open_file=lambda message: FullDisk(),
                                 on_discard=discarded.append, budget=PartialBudget())
    code, comment, _ = assembler.accept(make_chunk('A', b'x' * 100, 1, 500))
    assert code == 413 and 'No space' in comment
    assert [m.message_id for m in discarded] == ['A'] and discarded[0].file.closed
    assert not assembler.partial and assembler.files_in_use == 0


# -- over a real session

def test_large_message_delivered_whole_with_progress_and_one_success_report(transports):
    sender, receiver = sessions(transports, assembler=MessageAssembler(memory_limit=1 << 20))
    data = payload(3 * 1024 * 1024 + 17)
    progress = []
    with gevent.Timeout(TIMEOUT):
        message = sender.send_large_message(io.BytesIO(data), 'application/octet-stream', chunk_size=65536,
                                            success_report=True, progress_cb=lambda m: progress.append(
                                                m.bytes_acknowledged))
        assert message.wait() is message
        incoming = receiver.receive_chunk()
    assert message.state == MessageState.DELIVERED
    assert isinstance(incoming, IncomingMessage) and incoming.size == len(data)
    assert incoming.sha1() == hashlib.sha1(data).digest()
    assert progress == sorted(progress) and progress[-1] == len(data) and len(progress) == 49
    assert message.bytes_acknowledged == len(data)
    # the REPORT went to the message, not to the application
    assert receiver.incoming.empty() and sender.incoming.empty()


def test_chat_line_goes_out_between_the_chunks_of_a_long_message(transports):
    sender_session, receiver_session = sessions(transports)
    arrivals = []
    with gevent.Timeout(TIMEOUT):
        message = sender_session.send_large_message(payload(2 * 1024 * 1024), 'application/octet-stream',
                                                    chunk_size=16384)
        gevent.sleep(0)  # the writer starts the long message
        sender_session.send_message('hello', 'text/plain')
        while True:
            chunk = receiver_session.receive_chunk()
            arrivals.append(chunk.content_type)
            if chunk.content_type == 'application/octet-stream' and chunk.contflag == '$':
                break
        message.wait()
    position = arrivals.index('text/plain')
    assert 0 < position < len(arrivals) - 1, 'the chat line waited for the whole transfer'
    # at most one write of the message (MESSAGE_WRITE_BYTES of body: 4 chunks of 16 KiB) ahead of it, plus one
    assert position <= sender_session.MESSAGE_WRITE_BYTES // 16384 + 1


def test_small_chunks_go_out_several_per_write(transports):
    # Small chunks (as through a relay) are written several per syscall, up to MESSAGE_WRITE_BYTES of body
    # and the message's window; a 64 KiB chunk goes alone.  Every byte still arrives, in order.
    sender_session, receiver_session = sessions(transports)
    writes = []
    write_buffers = sender_session.msrp.write_buffers
    sender_session.msrp.write_buffers = lambda buffers: (writes.append(len(buffers) // 3), write_buffers(buffers))
    data = payload(1024 * 1024 + 100)
    received = []
    with gevent.Timeout(TIMEOUT):
        message = sender_session.send_large_message(data, 'application/octet-stream', chunk_size=8192)
        while True:
            chunk = receiver_session.receive_chunk()
            received.append(chunk.data)
            if chunk.contflag == '$':
                break
        message.wait()
    assert b''.join(received) == data
    assert sum(writes) == len(received) == 129
    assert max(writes) == min(sender_session.MESSAGE_WINDOW, sender_session.MESSAGE_WRITE_BYTES // 8192) == 8
    assert len(writes) < 129 // 2
    del writes[:]
    with gevent.Timeout(TIMEOUT):
        message = sender_session.send_large_message(data, 'application/octet-stream')  # 64 KiB chunks
        while receiver_session.receive_chunk().contflag != '$':
            pass
        message.wait()
    assert writes and max(writes) == 1
    del writes[:]
    with gevent.Timeout(TIMEOUT):
        message = sender_session.send_large_message(data, 'application/octet-stream', chunk_size=8192)
        message.relayed = True  # (before the writer takes it) as through a relay: smaller writes
        while receiver_session.receive_chunk().contflag != '$':
            pass
        message.wait()
    assert sum(writes) == 129 and max(writes) == sender_session.RELAY_WRITE_BYTES // 8192 == 3


def test_413_response_stops_the_message_and_ends_it_with_hash(transports):
    sender_transport, receiver_transport = transports
    sender = GreenMSRPSession(sender_transport)
    flags = []
    with gevent.Timeout(TIMEOUT):
        message = sender.send_large_message(payload(20000000), 'application/octet-stream', chunk_size=10000)
        while True:
            chunk = receiver_transport.read_chunk()
            flags.append(chunk.contflag)
            if len(flags) == 1:
                receiver_transport.write_response(chunk, 413, 'Stop sending')
            elif chunk.contflag == '+':
                receiver_transport.write_response(chunk, 200, 'OK')
            if chunk.contflag in '#$':
                break
        with pytest.raises(MSRPTransactionError) as error:
            message.wait()
    assert error.value.code == 413
    assert flags[-1] == '#' and len(flags) < 2000  # stopped well before the end
    assert message.state == MessageState.FAILED


def test_413_report_stops_the_message(transports):
    sender_transport, receiver_transport = transports
    sender = GreenMSRPSession(sender_transport)
    from msrplib.transport import make_report
    with gevent.Timeout(TIMEOUT):
        message = sender.send_large_message(payload(100000), 'application/octet-stream', chunk_size=5000)
        first = receiver_transport.read_chunk()
        receiver_transport.write_response(first, 200, 'OK')
        first.headers['Failure-Report'] = first.headers.get('Failure-Report') or __import__(
            'msrplib.protocol', fromlist=['FailureReportHeader']).FailureReportHeader('yes')
        receiver_transport.write_chunk(make_report(first, 413, 'Too big'))
        with pytest.raises(MSRPTransactionError) as error:
            message.wait()
    assert error.value.code == 413


def test_abort_sends_hash_and_fails_the_message(transports):
    sender_transport, receiver_transport = transports
    sender = GreenMSRPSession(sender_transport)
    with gevent.Timeout(TIMEOUT):
        message = sender.send_large_message(payload(1000000), 'application/octet-stream', chunk_size=1000)
        first = receiver_transport.read_chunk()
        message.abort()
        flags = [first.contflag]
        while flags[-1] == '+':
            flags.append(receiver_transport.read_chunk().contflag)
        with pytest.raises(MSRPTransactionError):
            message.wait()
    assert flags[-1] == '#'
    assert message.state == MessageState.ABORTED


def test_messages_fail_when_the_session_ends(transports):
    sender_transport, receiver_transport = transports
    sender = GreenMSRPSession(sender_transport)
    with gevent.Timeout(TIMEOUT):
        message = sender.send_large_message(payload(1000000), 'application/octet-stream', chunk_size=1000)
        receiver_transport.read_chunk()
        receiver_transport.loseConnection()
        with pytest.raises(MSRPTransactionError):
            message.wait()
        with pytest.raises(ConnectionClosed):
            sender.receive_chunk()
        with pytest.raises(MSRPSessionError):
            sender.send_large_message(b'x', 'text/plain')
    assert message.state == MessageState.FAILED


def test_session_with_assembler_drops_aborted_message_and_keeps_going(transports):
    sender, receiver = sessions(transports, assembler=MessageAssembler())
    with gevent.Timeout(TIMEOUT):
        doomed = sender.send_large_message(payload(500000), 'application/octet-stream', chunk_size=1000)
        gevent.sleep(0)
        doomed.abort()
        with pytest.raises(MSRPTransactionError):
            doomed.wait()
        sender.deliver_message('after', 'text/plain')
        incoming = receiver.receive_chunk()
    assert incoming.data == b'after'
    assert not receiver.assembler.partial


def test_send_file_streams_a_file_and_describes_it(transports, tmp_path):
    pytest.importorskip('msrplib.sdp')
    path = tmp_path / 'picture.bin'
    data = os.urandom(300000)
    path.write_bytes(data)
    sender, receiver = sessions(transports, assembler=MessageAssembler())
    with gevent.Timeout(TIMEOUT):
        message = sender.send_file(str(path), chunk_size=65536)
        message.wait()
        incoming = receiver.receive_chunk()
    assert incoming.data == data
    disposition = incoming.headers['Content-Disposition'].decoded
    assert disposition.disposition == 'attachment' and disposition.parameters['filename'] == 'picture.bin'
    selector = message.file_selector
    assert selector.size == len(data)
    assert incoming.headers['File-Selector'].encoded == str(selector)


def test_no_more_than_window_chunks_await_a_response(transports):
    sender_transport, receiver_transport = transports
    sender = GreenMSRPSession(sender_transport)
    with gevent.Timeout(TIMEOUT):
        message = sender.send_large_message(payload(100 * 1000), 'application/octet-stream', chunk_size=1000,
                                            window=4)
        held = [receiver_transport.read_chunk() for _ in range(4)]
        extra = gevent.spawn(receiver_transport.read_chunk)
        gevent.sleep(0.2)
        assert not extra.ready(), 'a fifth chunk was sent before any response'
        receiver_transport.write_response(held[0], 200, 'OK')
        fifth = extra.get()
        assert fifth.byte_range.start == 4001
        for chunk in held[1:] + [fifth]:
            receiver_transport.write_response(chunk, 200, 'OK')
        while True:
            chunk = receiver_transport.read_chunk()
            receiver_transport.write_response(chunk, 200, 'OK')
            if chunk.contflag == '$':
                break
        message.wait()
    assert message.bytes_acknowledged == 100 * 1000


class _StreamingSink:
    """A file-like sink without truncate: hashes what it is given in order (as a receiver that keeps nothing)."""

    def __init__(self, message=None):
        self.written = bytearray()
        self.position = 0

    def seek(self, offset, whence=io.SEEK_SET):
        self.position = offset
        return offset

    def write(self, data):
        assert self.position == len(self.written)
        self.written += data
        self.position += len(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass


def test_open_file_may_return_a_sink_without_truncate():
    assembler = MessageAssembler(memory_limit=10, open_file=_StreamingSink, budget=PartialBudget())
    assert assembler.accept(make_chunk('S', b'a' * 100, 1, 200))[0] == 200
    code, _, message = assembler.accept(make_chunk('S', b'b' * 100, 101, 200))
    assert code == 200 and message is not None and message.size == 200
    assert bytes(message.file.written) == b'a' * 100 + b'b' * 100
