"""No silent loss: every chunk a session accepted learns its outcome exactly once.

For every chunk accepted through ``send_chunk`` / ``deliver_chunk`` the caller
learns what happened: the peer's response, a local response (408, or 200 for
Failure-Report ``no``/``partial``), or ``MSRPSessionError`` from the call
itself (then no callback) -- also when the connection dies with chunks
queued, written but unanswered, or a sender blocked on a full queue.
"""

import random
import struct
import socket as stdlib_socket

import gevent
import pytest
from gevent.event import AsyncResult

from msrplib import MSRPError
from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import URI, MSRPHeader
from msrplib.session import GreenMSRPSession, MSRPSession, MSRPSessionError
from msrplib.transport import ConnectionClosed, MSRPTransactionError

T = 10


def bound_pair():
    acceptor = AcceptorDirect()
    passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
    connector = ConnectorDirect()
    active_path = connector.prepare(URI(host='127.0.0.1', use_tls=False))
    with gevent.Timeout(T):
        accepting = gevent.spawn(acceptor.complete, active_path)
        try:
            active = connector.complete(passive_path)
        finally:
            connector.cleanup()
        return active, accepting.get()


class SmallQueueSession(MSRPSession):
    OUTGOING_QUEUE_SIZE = 4
    RESPONSE_TIMEOUT = 0.3  # Failure-Report no/partial chunks wait this long for their local 200


class Ledger:
    """Outcomes per message number: each must be recorded exactly once."""

    def __init__(self, count):
        self.outcomes = {i: [] for i in range(count)}

    def callback(self, i):
        return lambda response: self.outcomes[i].append(('response', response.code))

    def refused(self, i, error):
        self.outcomes[i].append(('refused', type(error).__name__))

    def check(self):
        missing = [i for i, outcome in self.outcomes.items() if not outcome]
        repeated = {i: outcome for i, outcome in self.outcomes.items() if len(outcome) > 1}
        assert not missing, 'no outcome for messages %s' % missing
        assert not repeated, 'several outcomes for %s' % repeated

    def summary(self):
        kinds = {}
        for outcome in self.outcomes.values():
            kinds[outcome[0]] = kinds.get(outcome[0], 0) + 1
        return kinds


def kill(how, active, passive, receiver):
    if how == 'reset-passive':
        passive._sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack('ii', 1, 0))
        passive._sock.close()
    elif how == 'close-passive':
        passive.loseConnection()
    elif how == 'close-active':
        active.loseConnection()
    elif how == 'kill-receiver':
        receiver.reader_job.kill(block=False)
    elif how == 'stop-reading':
        receiver.reader_job.kill(block=False)  # the peer goes silent: responses stop, 408s follow
        passive._sock.shutdown(stdlib_socket.SHUT_WR)


@pytest.mark.parametrize('seed', range(8))
def test_connection_killed_at_a_random_point_of_200_messages_every_message_accounted_once(seed):
    rng = random.Random(seed)
    how = ['reset-passive', 'close-passive', 'close-active', 'kill-receiver', 'stop-reading'][seed % 5]
    active, passive = bound_pair()
    sender = SmallQueueSession(active)
    receiver = GreenMSRPSession(passive)
    count = 200
    ledger = Ledger(count)
    kill_after = rng.randint(0, count)
    responses_seen = []

    def send_all():
        for i in range(count):
            chunk = sender.make_message(b'message %d ' % i + b'x' * rng.choice([0, 10, 5000, 20000]), 'text/plain')
            if rng.random() < 0.2:
                chunk.add_header(MSRPHeader('Failure-Report', rng.choice(['no', 'partial'])))
            try:
                if rng.random() < 0.3:
                    event = AsyncResult()
                    sender.send_chunk(chunk, event.set)
                    try:
                        response = event.get(timeout=T)
                    except gevent.Timeout:
                        raise AssertionError('deliver of message %d never finished' % i)
                    ledger.callback(i)(response)
                else:
                    sender.send_chunk(chunk, ledger.callback(i))
            except MSRPSessionError as e:
                ledger.refused(i, e)
            if rng.random() < 0.1:
                gevent.sleep(rng.random() * 0.01)

    def drain():
        try:
            while True:
                receiver.receive_chunk()
                responses_seen.append(1)
                if len(responses_seen) == kill_after:
                    kill(how, active, passive, receiver)
        except ConnectionClosed:
            pass

    drainer = gevent.spawn(drain)
    if kill_after == 0:
        kill(how, active, passive, receiver)
    job = gevent.spawn(send_all)
    job.join(timeout=30)
    assert job.successful(), job.exception
    if len(responses_seen) < kill_after:
        kill(how, active, passive, receiver)  # all went through before the kill: kill anyway, late
    with gevent.Timeout(T):
        sender.shutdown()
    gevent.sleep(SmallQueueSession.RESPONSE_TIMEOUT + 0.2)  # no outcome may come twice, even late
    ledger.check()
    print('[random kill %s after %d] %s' % (how, kill_after, ledger.summary()))
    drainer.kill()
    receiver.reader_job.kill()
    active.loseConnection()
    passive.loseConnection()


def test_sender_blocked_on_a_full_queue_when_the_connection_dies_learns_the_outcome():
    # regression: the session ended, emptied its queue, and the blocked send_chunk then put its chunk
    # into the queue of the dead session, where nobody would ever answer it
    active, passive = bound_pair()
    sender = SmallQueueSession(active)
    try:
        outcomes = {}
        passive_reader = gevent.spawn(lambda: None)  # the peer reads nothing: the queue fills up

        def send(i):
            try:
                sender.send_chunk(sender.make_message(b'y' * 500000, 'text/plain'),
                                  lambda response: outcomes.setdefault(i, []).append(response.code))
            except MSRPSessionError:
                outcomes.setdefault(i, []).append('refused')

        jobs = [gevent.spawn(send, i) for i in range(40)]
        gevent.sleep(0.5)
        blocked = [job for job in jobs if not job.dead]
        assert blocked, 'no sender is blocked on the full queue'
        passive.loseConnection()
        gevent.joinall(jobs, timeout=T)
        with gevent.Timeout(T):
            sender.shutdown()
        gevent.sleep(0.1)
        assert sorted(outcomes) == list(range(40)), 'no outcome for %s' % sorted(set(range(40)) - set(outcomes))
        assert all(len(outcome) == 1 for outcome in outcomes.values()), outcomes
        passive_reader.kill()
    finally:
        active.loseConnection()
        passive.loseConnection()


def test_chunk_that_cannot_be_encoded_in_the_writer_gets_an_outcome_and_the_writer_goes_on():
    # regression: a header value with a line break raised out of the writer greenlet, which died:
    # that chunk and the ones batched with it were never sent nor answered, and nothing else was sent
    active, passive = bound_pair()
    sender = MSRPSession(active)
    receiver = GreenMSRPSession(passive)
    try:
        outcomes = {}
        chunks = [sender.make_message(b'message %d' % i, 'text/plain') for i in range(6)]
        chunks[3].add_header(MSRPHeader('X-Broken', 'line\r\nbreak'))
        for i, chunk in enumerate(chunks):  # back to back: all but the first go through the writer's queue
            try:
                sender.send_chunk(chunk, lambda response, i=i: outcomes.setdefault(i, []).append(response.code))
            except MSRPError as e:
                outcomes.setdefault(i, []).append(type(e).__name__)
        with gevent.Timeout(T):
            while len(outcomes) < 6:
                gevent.sleep(0.01)
            received = [receiver.receive_chunk().data for _ in range(5)]
        assert received == [b'message %d' % i for i in (0, 1, 2, 4, 5)]
        assert [outcomes[i] for i in (0, 1, 2, 4, 5)] == [[200]] * 5
        assert len(outcomes[3]) == 1 and outcomes[3][0] != 200
        # the writer is still alive
        assert sender.deliver_message(b'after', 'text/plain').code == 200
    finally:
        sender.shutdown()
        receiver.reader_job.kill()
        active.loseConnection()
        passive.loseConnection()
