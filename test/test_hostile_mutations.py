"""Mutated traffic at a real session: valid MSRP streams with random edits, from a raw socket.

Each case (a fixed seed, so a failure can be replayed) takes a few valid
requests or responses, deletes, inserts and overwrites bytes at random and
writes the result in random pieces at a GreenMSRPSession.  Whatever comes,
the library may only: deliver chunks whose properties raise nothing but
MSRPError subclasses, answer with responses that parse, give every
deliver_chunk() exactly one outcome, and end the session with a documented
exception.  No exception may escape into the gevent hub (an uncaught error
in one of the library's greenlets), and nothing may hang.
"""

import random

import gevent
import pytest

from msrplib import MSRPError
from msrplib.protocol import CHUNK_START, MSRPParser, SuccessReportHeader
from msrplib.session import GreenMSRPSession
from msrplib.transport import ConnectionClosed, MSRPTransactionError

from msrplib.testing.loopback import raw_peer_transport

T = 3  # seconds one case may take
CASES = 150

TOKENS = [b'\r\n', b'-------', b'$', b'+', b'#', b':', b' ', b'\x00', b'\xff', b'*', b'/', b'-', b'0',
          b'99999999999999999999', b'\xc3', b'msrps://', b';tcp', b'Byte-Range: ', b'Content-Type: ',
          b'Failure-Report: no', b'Success-Report: yes', b'Status: 000 ', b'\n', b'\r', b'MSRP ']

PATHS = b'To-Path: msrp://127.0.0.1:%(local)s/local;tcp\r\nFrom-Path: msrp://127.0.0.1:%(remote)s/remote;tcp\r\n'
REQUESTS = [
    b'MSRP a786hjs2 SEND\r\n' + PATHS + b'Message-ID: 87652491\r\nByte-Range: 1-25/25\r\n'
    b'Content-Type: text/plain\r\n\r\nHey Bob, are you there?\r\n-------a786hjs2$\r\n',
    b'MSRP dkei38sd SEND\r\n' + PATHS + b'Message-ID: 456\r\nByte-Range: 1-7/14\r\nSuccess-Report: yes\r\n'
    b'Failure-Report: partial\r\nContent-Type: message/cpim\r\n\r\nabcdefg\r\n-------dkei38sd+\r\n',
    b'MSRP dkei38ia SEND\r\n' + PATHS + b'Message-ID: 456\r\nByte-Range: 8-14/14\r\n'
    b'Content-Type: message/cpim\r\n\r\nhijklmn\r\n-------dkei38ia$\r\n',
    b'MSRP dkei38sx REPORT\r\n' + PATHS + b'Message-ID: 12339sdqwer\r\nByte-Range: 1-106/106\r\n'
    b'Status: 000 200 OK\r\n-------dkei38sx$\r\n',
    b'MSRP nick1 NICKNAME\r\n' + PATHS + b'Use-Nickname: "Bob"\r\n-------nick1$\r\n',
    b'MSRP zzzz 200 OK\r\n' + PATHS + b'-------zzzz$\r\n',
    b'MSRP a786hjs3 SEND\r\n' + PATHS + b'Message-ID: 9\r\nByte-Range: 1-*/*\r\nContent-Type: text/plain\r\n'
    b'\r\nabc\r\n-------a786hjs3#\r\n',
    b'MSRP a786hjs4 SEND\r\n' + PATHS + b'Message-ID: 10\r\n-------a786hjs4$\r\n',
]
PROPERTIES = ('method', 'code', 'comment', 'data', 'contflag', 'byte_range', 'message_id', 'content_type',
              'failure_report', 'success_report', 'status', 'headers', 'transaction_id', 'size', 'final')


def mutate(data, rng):
    """``data`` with one to six random deletions, insertions (of protocol tokens or of its own bytes) and overwrites."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        operation, position = rng.randint(0, 4), rng.randint(0, len(data))
        if operation == 0:
            del data[position:position + rng.randint(1, 8)]
        elif operation == 1:
            data[position:position] = rng.choice(TOKENS)
        elif operation == 2 and data:
            data[min(position, len(data) - 1)] = rng.randint(0, 255)
        elif operation == 3:
            data[position:position] = data[rng.randint(0, len(data)):][:rng.randint(1, 60)]
        else:
            data[position:position] = rng.choice(TOKENS) * rng.randint(1, 3)
    return bytes(data)


def write_in_pieces(sock, data, rng):
    """Write ``data`` in random pieces of 1-80 bytes; stop quietly when the library closed the connection."""
    position = 0
    try:
        while position < len(data):
            size = rng.randint(1, 80)
            sock.sendall(data[position:position + size])
            position += size
    except OSError:
        pass


@pytest.fixture
def hub_errors():
    """The errors that reach the gevent hub while the test runs (uncaught in a greenlet)."""
    hub = gevent.get_hub()
    errors = []
    original = hub.handle_error

    def handle_error(context, kind, value, tb):
        if not issubclass(kind, gevent.GreenletExit):
            errors.append((context, kind, value))
        return original(context, kind, value, tb)
    hub.handle_error = handle_error
    try:
        yield errors
    finally:
        hub.handle_error = original


def paths(transport):
    return {b'local': str(transport.local_uri.port).encode(),
            b'remote': str(transport.full_remote_path[-1].port).encode()}


def read_everything(sock, handle):
    """Call ``handle(data)`` with what ``sock`` receives until the peer (or the test) closes it."""
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        handle(data)


def touch(chunk):
    """Read every property and header of ``chunk``: only MSRPError may come out."""
    for name in PROPERTIES:
        try:
            getattr(chunk, name)
        except MSRPError:
            pass
    str(chunk)
    repr(chunk)
    for header in list(chunk.headers.values()):
        try:
            header.decoded
        except MSRPError:
            pass


@pytest.mark.parametrize('first_seed', range(0, CASES, 50))
def test_mutated_requests_get_responses_or_a_documented_end(hub_errors, first_seed):
    delivered = answered = 0
    for seed in range(first_seed, first_seed + 50):
        chunks, responses = run_mutated_requests(seed, hub_errors)
        delivered += chunks
        answered += responses
    assert delivered and answered  # the mutations leave enough intact for the session to work on


def run_mutated_requests(seed, hub_errors):
    rng = random.Random(seed)
    transport, raw = raw_peer_transport()
    session = GreenMSRPSession(transport, accept_types=['text/plain', 'message/*'])
    values = paths(transport)
    stream = mutate(b''.join(rng.choice(REQUESTS) % values for _ in range(rng.randint(1, 4))), rng)
    outcome = []
    delivered = []

    def consume():
        while True:
            try:
                chunk = session.receive_chunk()
            except (MSRPError, ConnectionClosed) as error:  # ConnectionClosed is not an MSRPError
                outcome.append(error)
                return
            touch(chunk)
            delivered.append(chunk)
    consumer = gevent.spawn(consume)
    replies = bytearray()
    reader = gevent.spawn(read_everything, raw, replies.extend)
    try:
        with gevent.Timeout(T, AssertionError('seed %d: the session neither delivered nor ended' % seed)):
            write_in_pieces(raw, stream, rng)
            try:
                raw.shutdown(1)  # end of input: the session has to end now
            except OSError:
                pass
            consumer.get()
    finally:
        consumer.kill()
        session.shutdown(sync=False)
        transport.loseConnection(wait=False)
        reader.join(T)
        reader.kill()
        raw.close()
    assert outcome and isinstance(outcome[0], (MSRPError, ConnectionClosed)), (seed, stream)
    responses = 0
    for kind, chunk in MSRPParser().feed(bytes(replies)):  # what the session wrote is valid MSRP
        if kind == CHUNK_START and chunk.method is None:
            assert 200 <= chunk.code <= 599, (seed, chunk)
            responses += 1
    assert not hub_errors, (seed, stream, hub_errors)
    return len(delivered), responses


@pytest.mark.parametrize('first_seed', range(1000, 1000 + CASES, 50))
def test_mutated_responses_give_each_deliver_chunk_one_outcome(hub_errors, first_seed):
    outcomes = []
    for seed in range(first_seed, first_seed + 50):
        outcomes += run_mutated_responses(seed, hub_errors)
    assert 200 in outcomes and 408 in outcomes  # some responses survive the mutations, some do not


def run_mutated_responses(seed, hub_errors):
    rng = random.Random(seed)
    transport, raw = raw_peer_transport()
    session = GreenMSRPSession(transport, accept_types=['*'])
    session.RESPONSE_TIMEOUT = 0.1  # for the responses the mutations destroy
    values = paths(transport)
    outcomes = []

    def deliver(number):
        chunk = transport.make_send_request(data=b'hello %d' % number)
        if rng.random() < 0.3:
            chunk.add_header(SuccessReportHeader('yes'))
        try:
            outcomes.append(session.deliver_chunk(chunk).code)
        except MSRPTransactionError as error:
            outcomes.append(error.code)
        except MSRPError as error:  # the session ended first
            outcomes.append(type(error).__name__)
    senders = [gevent.spawn(deliver, number) for number in range(rng.randint(1, 3))]
    requests = []
    parser = MSRPParser()

    def take_requests(data):
        requests.extend(chunk for kind, chunk in parser.feed(data) if kind == CHUNK_START)
    reader = gevent.spawn(read_everything, raw, take_requests)
    try:
        with gevent.Timeout(T, AssertionError('seed %d: a deliver_chunk() got no outcome' % seed)):
            while len(requests) < len(senders):
                gevent.sleep(0.001)
            answers = b''
            for request in requests:
                tid = request.transaction_id.encode()
                kind = rng.randint(0, 2)
                if kind < 2:
                    answers += (b'MSRP %s %s\r\n' % (tid, b'200 OK' if kind == 0 else b'403 Nope') + PATHS % values
                                + b'-------%s$\r\n' % tid)
                answers += (b'MSRP r%s REPORT\r\n' % tid + PATHS % values + b'Message-ID: %s\r\n'
                            b'Byte-Range: 1-7/7\r\nStatus: 000 200 OK\r\n-------r%s$\r\n'
                            % (request.message_id.encode(), tid))
            write_in_pieces(raw, mutate(answers, rng), rng)
            gevent.joinall(senders, raise_error=True)
            if not session.connected:  # the answers ended the session: for a documented reason
                with pytest.raises((MSRPError, ConnectionClosed)):
                    while True:
                        session.receive_chunk()
    finally:
        gevent.killall(senders)
        session.shutdown(sync=False)
        transport.loseConnection(wait=False)
        reader.kill()
        raw.close()
    assert len(outcomes) == len(senders), (seed, outcomes)
    for outcome in outcomes:  # a code (the peer's, perhaps mutated, or a local 408) or the session's end
        assert (type(outcome) is int and 200 <= outcome <= 999) or outcome == 'MSRPSessionError', (seed, outcomes)
    assert not hub_errors, (seed, hub_errors)
    return outcomes
