"""Attacks on MessageAssembler (issue 17) in a victim process: GreenMSRPSession(assembler=MessageAssembler())
behind an AcceptorDirect that keeps listening; raw peers in this process; RSS and CPU from psutil.

Figures (printed with ``-s``) are recorded in doc/limits.md.
"""

import gevent
import pytest

from hostile_peer import MiB, PeakRSS, Victim
from msrplib.testing import RawSender

VICTIM = r'''
import sys
import os

import gevent
from msrplib import message
from msrplib.connect import AcceptorDirect, MSRPIncomingConnectTimeout
from msrplib.message import MessageAssembler
from msrplib.protocol import URI
from msrplib.session import GreenMSRPSession
from msrplib.transport import ConnectionClosed

message.PROCESS_BUDGET.max_memory = int(sys.argv[1])
MSRPIncomingConnectTimeout.seconds = None
acceptor = AcceptorDirect()
acceptor.keep_listening = True
path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
print('path: ' + ' '.join(str(uri) for uri in path), flush=True)


def serve(transport):
    session = GreenMSRPSession(transport, assembler=MessageAssembler())
    try:
        while True:
            item = session.receive_chunk()
            print('message %s %d' % (item.message_id, len(item.data)), flush=True)
    except ConnectionClosed:
        pass


while True:
    gevent.spawn(serve, acceptor.complete(None))
'''


@pytest.fixture
def victim():
    def start(max_memory=64 * MiB):
        process = Victim(['-c', VICTIM, str(max_memory)])
        started.append(process)
        return process
    started = []
    yield start
    for process in started:
        process.kill()


@pytest.fixture
def senders():
    made = []

    def make(path):
        sender = RawSender(path)
        made.append(sender)
        return sender
    yield make
    for sender in made:
        sender.close()


def test_last_byte_of_64_messages_of_1_mib_in_20_sessions(victim, senders):
    # Issue 17: 300 KiB sent -> 1.3 GiB RSS.
    process = victim()
    path = process.path()
    with gevent.Timeout(60), PeakRSS(process, 'MessageAssembler: last byte of 64 x 1 MiB, 20 sessions') as memory:
        attackers = [senders(path) for _ in range(20)]
        assert [attacker.bind() for attacker in attackers] == [200] * 20
        for attacker in attackers:
            tids = [attacker.send('m%d' % number, b'z', start=MiB, total=MiB, flag='+') for number in range(64)]
            assert [attacker.wait(tid) for tid in tids] == [200] * 64
    assert memory.growth < 40 * MiB


def test_one_byte_chunks_at_odd_offsets_get_413_beyond_max_fragments(victim, senders):
    # Issue 17: 30k chunks -> 26 s of CPU, 60k -> 107 s; the process stalled.
    process = victim()
    path = process.path()
    attacker = senders(path)
    before = process.cpu()
    with gevent.Timeout(120):
        assert attacker.bind() == 200
        tids = [attacker.send('frag', b'a', start=2 * number + 1, total=200000, flag='+')
                for number in range(60000)]
        codes = [attacker.wait(tid) for tid in tids]
        print('\n[cpu] MessageAssembler: 60,000 one-byte chunks at odd offsets: victim CPU %.2f s'
              % (process.cpu() - before))
        assert codes[:1024] == [200] * 1024 and set(codes[1024:]) == {413}
        # the message is refused, the session and the process go on
        assert attacker.wait(attacker.send('fine', b'hello')) == 200
        process.expect('message fine 5')
        other = senders(path)
        assert other.bind() == 200
        assert other.wait(other.send('other', b'hi')) == 200
        process.expect('message other 2')


def test_partial_messages_in_memory_stay_within_the_process_budget(victim, senders):
    # 16 sessions x 8 messages, each 3/4 received (96 MiB; 6 MiB a session, within its memory_budget): beyond
    # PROCESS_BUDGET.max_memory (16 MiB here) they are spilled to temporary files instead of memory.
    process = victim(max_memory=16 * MiB)
    path = process.path()
    piece = b'p' * (256 * 1024)
    with gevent.Timeout(120), PeakRSS(process, 'MessageAssembler: 96 MiB of partial messages, 16 MiB budget') \
            as memory:
        attackers = []
        for _ in range(16):
            attackers.append(senders(path))
            assert attackers[-1].bind() == 200
        for attacker in attackers:
            tids = [attacker.send('m%d' % number, piece, start=index * len(piece) + 1, total=MiB, flag='+')
                    for number in range(8) for index in range(3)]
            assert [attacker.wait(tid) for tid in tids] == [200] * 24
    assert memory.growth < 100 * MiB   # 147 MiB without the process budget
