"""Hostile peers that have bound a session: memory, loss and stalls (issue 17, session and transport side).

A peer that holds the session path may send what it likes.  Each attack
here is made by a raw peer (a plain socket speaking hand-made bytes) in the
test process, against a victim that is either another process (where memory
is at stake: its RSS is read with psutil) or a session in this process.
Every wait is under a timeout.  The memory figures are printed (run with
``-s``) and recorded in doc/limits.md; the bounds asserted are the
documented worst cases with room for the interpreter's own noise.
"""

import collections

import gevent
import gevent.socket
import pytest
from gevent.event import Event

from msrplib.protocol import URI, MSRPParser, CHUNK_START, CHUNK_END, URIHeaderType
from msrplib.session import GreenMSRPSession, MSRPSession
from msrplib.transport import (
    MSRPTransport, MSRPTransactionError, ConnectionDone, ConnectionLost)
from msrplib import tls

from msrplib.testing.loopback import raw_peer_transport, socket_pair

from victim_process import VictimProcess

T = 10  # seconds any single blocking step may take
MiB = 1024 * 1024
ATTACKER = URI(host='127.0.0.1', port=9, use_tls=False, session_id='attacker')


# ---------------------------------------------------------------------------
# The raw peer

class RawPeer:
    """A plain socket that binds as ``uri`` and then sends what the test makes; it reads every response."""

    def __init__(self, sock, victim_uri, uri=ATTACKER):
        self.sock = sock
        self.victim = victim_uri
        self.uri = uri
        self.codes = collections.Counter()       # response code -> how many
        self.requests = []                       # requests the victim sent us (keep-alives...)
        self.answer_requests = True
        self._reader = gevent.spawn(self._read)
        self._tid = 0

    @classmethod
    def connect(cls, victim_uri, uri=ATTACKER):
        sock = gevent.socket.create_connection((victim_uri.host, victim_uri.port), timeout=T)
        sock.settimeout(None)
        return cls(sock, victim_uri, uri)

    def _read(self):
        parser = MSRPParser()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                for kind, value in parser.feed(data):
                    if kind is CHUNK_START:
                        current = value
                    elif kind is CHUNK_END:
                        if current.code is not None:
                            self.codes[current.code] += 1
                        else:
                            self.requests.append(current)
                            if self.answer_requests:
                                tid = current.transaction_id.encode()
                                self.sock.sendall(
                                    b'MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n' % (
                                        tid, str(self.victim).encode(), str(self.uri).encode(), tid))
        except OSError:
            return

    def chunk(self, body=b'', from_path=None, headers=(), content_type=b'text/plain'):
        """The bytes of one SEND to the victim."""
        self._tid += 1
        tid = b'atk%08d' % self._tid
        lines = [b'MSRP %s SEND' % tid, b'To-Path: %s' % str(self.victim).encode(),
                 b'From-Path: %s' % (from_path if from_path is not None else str(self.uri).encode()),
                 b'Message-ID: m%d' % self._tid, b'Byte-Range: 1-%d/%d' % (len(body), len(body))]
        lines += list(headers)
        if body:
            lines.append(b'Content-Type: ' + content_type)
            return b'\r\n'.join(lines) + b'\r\n\r\n' + body + b'\r\n-------' + tid + b'$\r\n'
        return b'\r\n'.join(lines) + b'\r\n-------' + tid + b'$\r\n'

    def bind(self):
        self.sock.sendall(self.chunk())
        self.wait_codes(200, 1)

    def wait_codes(self, code, count, seconds=T):
        with gevent.Timeout(seconds):
            while self.codes[code] < count:
                gevent.sleep(0.01)

    def push(self, data, stall=2.0):
        """Send ``data``; return the bytes the victim took before it stopped taking any for ``stall`` s."""
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            try:
                with gevent.Timeout(stall):
                    sent += self.sock.send(view[sent:sent + 4 * MiB])
            except gevent.Timeout:
                return sent
        return sent

    def close(self):
        self._reader.kill(block=False)
        self.sock.close()


# ---------------------------------------------------------------------------
# A victim in another process

class Victim(VictimProcess):
    """test/bound_victim.py in a subprocess; ``rss()`` is its resident memory, ``peak`` the most seen."""

    def __init__(self, kind):
        super().__init__('bound_victim.py', [kind, str(ATTACKER)], T)
        self.uri = URI.parse(self.line())

    def wait_bound(self):
        assert self.line() == 'bound'

    def settle(self):
        """The victim's RSS once it is idle (the largest of a few samples)."""
        samples = []
        for _ in range(5):
            gevent.sleep(0.05)
            samples.append(self.rss())
        return max(samples)

    def stop_sampling(self):
        self._sampler.kill()
        self.peak = max(self.peak, self.rss())
        return self.peak

    def alive(self):
        return self.process.poll() is None


@pytest.fixture
def victim_factory():
    victims = []

    def make(kind):
        victim = Victim(kind)
        victims.append(victim)
        return victim
    yield make
    for victim in victims:
        victim.close()


def attack(victim_factory, kind):
    victim = victim_factory(kind)
    peer = RawPeer.connect(victim.uri)
    peer.bind()
    victim.wait_bound()
    return victim, peer


def report(label, start, peak, pushed):
    print('\n[memory] %s: victim RSS %.1f MiB after binding, peak %.1f MiB (+%.1f MiB); the peer got %.1f MiB in' % (
        label, start / MiB, peak / MiB, (peak - start) / MiB, pushed / MiB))


# ---------------------------------------------------------------------------
# Large chunks while the application does not read: back-pressure, not buffering

@pytest.mark.parametrize('kind', ['green', 'callback'])
def test_large_chunks_to_an_application_that_does_not_read_are_held_back_by_tcp(victim_factory, kind):
    # Measured before the fix (GreenMSRPSession): RSS grew 1:1 with what was sent, to 12 GiB in 45 s.
    victim, peer = attack(victim_factory, kind)
    try:
        start = victim.settle()
        victim.start_sampling()
        body = b'a' * (30 * MiB)
        pushed = 0
        held = False
        for _ in range(12):  # 360 MiB offered
            chunk = peer.chunk(body)
            taken = peer.push(chunk)
            pushed += taken
            if taken < len(chunk):
                held = True  # the victim stopped reading: TCP flow control holds us
                break
        peak = victim.stop_sampling()
        report('30 MiB chunks, %s application not reading' % kind, start, peak, pushed)
        assert held, 'the victim read all 360 MiB'
        assert victim.alive()
        # what the victim holds: INCOMING_BUFFER_SIZE plus one chunk (green; nothing but the chunk given to the
        # stuck callback), the chunk being joined from its pieces, the parser's last read; and the kernel's buffers
        # hold the rest of what we could push
        bound = GreenMSRPSession.INCOMING_BUFFER_SIZE + 2 * MSRPTransport.max_chunk_size + 16 * MiB
        assert peak - start < bound
        assert pushed < 3 * len(chunk)
    finally:
        peer.close()


# ---------------------------------------------------------------------------
# Long paths, text varied per chunk: parsed objects must not amplify

def varied_path(count, number):
    # ``count`` short URIs, different for every chunk (so that no cache of known path texts helps), ending
    # with the attacker's own URI (so that the path is accepted when it is not too long)
    uris = [b'msrp://a/n%d;tcp' % number] + [b'msrp://a/%d;tcp' % i for i in range(count - 2)]
    return b' '.join(uris + [str(ATTACKER).encode()])


def test_from_path_of_895_uris_is_refused_with_400_and_costs_nothing(victim_factory):
    # Measured before the fix (MSRPServer session, application not reading): 15 MiB sent -> +478 MiB RSS.
    victim, peer = attack(victim_factory, 'green')
    try:
        start = victim.settle()
        victim.start_sampling()
        pushed = 0
        sent_chunks = 0
        while pushed < 15 * MiB:
            chunk = peer.chunk(b'hello %d' % sent_chunks, from_path=varied_path(895, sent_chunks))
            assert len(chunk) < 16384 + 300  # within the parser's line limit
            taken = peer.push(chunk)
            pushed += taken
            if taken < len(chunk):
                break
            sent_chunks += 1
        peer.wait_codes(400, sent_chunks, seconds=30)  # every one refused, none delivered
        peak = victim.stop_sampling()
        report('From-Path of 895 URIs', start, peak, pushed)
        assert peer.codes[200] == 1  # the binding only
        assert peak - start < 16 * MiB
    finally:
        peer.close()


def test_long_accepted_paths_count_against_the_incoming_buffer(victim_factory):
    # Paths at the URI limit, accepted and queued for an application that does not read: what the parsed
    # paths cost is counted in INCOMING_BUFFER_SIZE, so the reader stops long before INCOMING_QUEUE_SIZE chunks.
    victim, peer = attack(victim_factory, 'green')
    try:
        start = victim.settle()
        victim.start_sampling()
        pushed = 0
        number = 0
        held = False
        while pushed < 15 * MiB:
            chunk = peer.chunk(b'x' * 10, from_path=varied_path(URIHeaderType.max_uris, number))
            taken = peer.push(chunk)
            pushed += taken
            number += 1
            if taken < len(chunk):
                held = True
                break
        peak = victim.stop_sampling()
        report('From-Path of %d URIs, accepted' % URIHeaderType.max_uris, start, peak, pushed)
        assert held
        accepted = peer.codes[200] - 1
        assert 0 < accepted < GreenMSRPSession.INCOMING_QUEUE_SIZE
        assert peak - start < GreenMSRPSession.INCOMING_BUFFER_SIZE + 8 * MiB
    finally:
        peer.close()


# ---------------------------------------------------------------------------
# No silent loss: a chunk answered 200 reaches the application or the session ends with an error

class SmallSession(GreenMSRPSession):
    INCOMING_QUEUE_SIZE = 4
    KEEPALIVE_INTERVAL = 0.2
    RESPONSE_TIMEOUT = 0.2


def session_with_raw_peer(session_class=SmallSession, **kwargs):
    transport, raw = raw_peer_transport()
    session = session_class(transport, **kwargs)
    peer = RawPeer(raw, transport.local_uri, uri=transport.remote_uri)
    return session, peer


def test_keepalive_cycles_while_the_application_does_not_read_lose_nothing_and_end_nothing():
    # Measured before the fix: 10 sent, 4 delivered (one chunk answered 200 dropped per keep-alive cycle), and
    # the session never ended.
    session, peer = session_with_raw_peer()
    try:
        for _ in range(10):
            peer.sock.sendall(peer.chunk(b'line'))
        gevent.sleep(1.5)  # the application does not read: seven keep-alive intervals, each a response timeout
        assert session.connected
        with gevent.Timeout(T):
            received = [session.receive_chunk() for _ in range(10)]
        assert [chunk.data for chunk in received] == [b'line'] * 10
        peer.wait_codes(200, 10)
        assert session.connected and session.incoming.qsize() == 0
        # the keep-alive still watches the connection once the application reads again
        with gevent.Timeout(T):
            while not peer.requests:
                gevent.sleep(0.05)
        assert not peer.requests[0].data  # an empty SEND
        assert session.connected
    finally:
        peer.close()
        session.reader_job.kill(block=False)


class SlowCallbackSession(MSRPSession):
    KEEPALIVE_INTERVAL = 0.2
    RESPONSE_TIMEOUT = 0.2


def test_a_callback_slower_than_the_keepalive_cycle_does_not_end_a_healthy_session():
    # The callback holds the reader (it reads nothing meanwhile, the keep-alive's answer included): that is
    # this side's doing, not a dead connection.  Before, the keep-alive's 408 killed the reader in the callback.
    delivered = []
    errors = []
    finished = []

    def slow(chunk=None, error=None):
        if error is not None:
            errors.append(error)
            return
        delivered.append(chunk.data)
        if len(delivered) == 1:
            gevent.sleep(1.5)  # an application busy for seven keep-alive cycles
            finished.append(True)  # (not cut short by an exception thrown into the callback)

    session, peer = session_with_raw_peer(SlowCallbackSession, on_incoming_cb=slow)
    try:
        for number in range(5):
            peer.sock.sendall(peer.chunk(b'line %d' % number))
        with gevent.Timeout(T):
            while len(delivered) < 5:
                gevent.sleep(0.05)
            while not peer.requests:  # and the keep-alive goes on once the callback returned
                gevent.sleep(0.05)
        gevent.sleep(0.5)
        assert delivered == [b'line %d' % number for number in range(5)]
        assert finished == [True]
        assert not errors and session.connected
    finally:
        peer.close()
        session.reader_job.kill(block=False)


def test_an_application_that_takes_chunks_straight_from_the_queue_lets_the_reader_go_on():
    # ``incoming`` is public (classic API): chunks taken with incoming.get() free room as receive_chunk() does.
    session, peer = session_with_raw_peer()
    try:
        for _ in range(10):
            peer.sock.sendall(peer.chunk(b'line'))
        peer.wait_codes(200, 4)
        with gevent.Timeout(T):
            received = [session.incoming.get() for _ in range(10)]
        assert [chunk.data for chunk in received] == [b'line'] * 10
        peer.wait_codes(200, 10)
    finally:
        peer.close()
        session.reader_job.kill(block=False)


def test_killing_the_reader_while_it_waits_for_the_application_ends_the_session():
    session, peer = session_with_raw_peer()
    try:
        for _ in range(10):
            peer.sock.sendall(peer.chunk(b'line'))
        peer.wait_codes(200, 4)
        gevent.sleep(0.2)
        assert session.incoming.qsize() == 4  # the reader waits for room
        session.reader_job.kill(ConnectionLost('killed by the test'), block=False)
        with gevent.Timeout(T):
            delivered = []
            with pytest.raises(ConnectionLost, match='killed by the test'):
                while True:
                    delivered.append(session.receive_chunk())
        assert not session.connected
        assert len(delivered) == peer.codes[200] == 4  # every chunk answered 200 was delivered
    finally:
        peer.close()


class BlockingCallback:
    """An on_incoming_cb that blocks on the first chunk; ``catch`` makes it swallow exceptions itself."""

    def __init__(self, catch=False):
        self.catch = catch
        self.chunks = []
        self.errors = []
        self.entered = Event()

    def __call__(self, chunk=None, error=None):
        if error is not None:
            self.errors.append(error)
            return
        self.chunks.append(chunk)
        self.entered.set()
        if self.catch:
            try:
                Event().wait()
            except Exception:
                pass  # an application that catches everything
        else:
            Event().wait()


@pytest.mark.parametrize('catch', [False, True], ids=['callback-blocks', 'callback-swallows-the-kill'])
def test_killing_the_reader_inside_a_blocking_callback_ends_the_session(catch):
    # Before the fix, _deliver's ``except Exception`` swallowed the kill: the session went on.
    callback = BlockingCallback(catch)
    session, peer = session_with_raw_peer(MSRPSession, on_incoming_cb=callback)
    try:
        peer.sock.sendall(peer.chunk(b'one') + peer.chunk(b'two'))
        with gevent.Timeout(T):
            callback.entered.wait()
        session.reader_job.kill(ConnectionLost('killed by the test'), block=False)
        with gevent.Timeout(T):
            session.reader_job.join()
            session.shutdown()  # returns at once: the session is over
        assert len(callback.errors) == 1 and isinstance(callback.errors[0].value, ConnectionLost)
        assert str(callback.errors[0].value) == 'killed by the test'
        assert [chunk.data for chunk in callback.chunks] == [b'one']
    finally:
        peer.close()


def test_plain_kill_ends_a_waiting_reader_with_connection_done():
    session, peer = session_with_raw_peer()
    try:
        for _ in range(6):
            peer.sock.sendall(peer.chunk(b'line'))
        peer.wait_codes(200, 4)
        session.reader_job.kill(block=False)
        with gevent.Timeout(T):
            for _ in range(4):
                session.receive_chunk()
            with pytest.raises(ConnectionDone):
                session.receive_chunk()
    finally:
        peer.close()


# ---------------------------------------------------------------------------
# A peer that never reads: writes that make no progress end

@pytest.fixture(params=['tcp', 'tls'])
def non_reading_peer(request):
    """(transport, raw socket) over loopback with small buffers; the raw side never reads."""
    if request.param == 'tls':
        context = tls.TLSCredentials.ephemeral().server_context()
        raw, sock = socket_pair(server_ctx=context, buffer_size=65536)
        raw, sock = sock, raw  # (the client end is the transport's; any end works)
    else:
        raw, sock = socket_pair(buffer_size=65536)
    local = URI(host='127.0.0.1', port=1, use_tls=False, session_id='local')
    transport = MSRPTransport(local, sock=sock)
    transport.set_full_remote_path([URI(host='127.0.0.1', port=2, use_tls=False, session_id='remote')])
    transport.write_progress_timeout = 0.5
    yield transport, raw
    transport.loseConnection(wait=False)
    raw.close()


def test_deliver_chunk_to_a_peer_that_never_reads_ends_with_the_connection_lost(non_reading_peer):
    # Measured before the fix: deliver_chunk blocked 160 s, until the peer closed the connection.
    transport, raw = non_reading_peer
    errors = []
    session = MSRPSession(transport, on_incoming_cb=lambda chunk=None, error=None: errors.append(error))
    session.RESPONSE_TIMEOUT = 60  # (so that only the write-progress timeout can end the wait)
    chunk = session.make_message(b'z' * (16 * MiB), 'application/octet-stream')
    with gevent.Timeout(T):
        with pytest.raises(MSRPTransactionError) as raised:
            session.deliver_chunk(chunk)
        assert raised.value.code == 408
        session.reader_job.join()
    assert len(errors) == 1 and isinstance(errors[0].value, ConnectionLost)
    assert 'No write progress for 0.5 seconds' in str(errors[0].value)
    with gevent.Timeout(1):
        session.shutdown()  # over already: returns at once
    with pytest.raises(ConnectionLost):
        transport.write(b'more')


def test_send_chunk_and_shutdown_with_a_peer_that_never_reads_end(non_reading_peer):
    transport, raw = non_reading_peer
    session = GreenMSRPSession(transport)
    outcomes = []
    with gevent.Timeout(T):
        for _ in range(40):  # 40 x 1 MiB through the writer greenlet
            session.send_chunk(session.make_message(b'y' * MiB, 'application/octet-stream'), outcomes.append)
        session.shutdown()  # flushes, waits (bounded), closes: every transaction gets its one outcome
    assert len(outcomes) == 40
    assert all(response.code == 408 for response in outcomes)
    with pytest.raises(ConnectionLost):
        session.receive_chunk()


def test_write_sync_and_lose_connection_with_a_peer_that_never_reads_end(non_reading_peer):
    transport, raw = non_reading_peer
    with gevent.Timeout(T):
        with pytest.raises(ConnectionLost, match='No write progress'):
            transport.write(b'w' * (8 * MiB))
        transport.loseConnection()  # nothing is left to flush: returns at once
    # write(sync=False) buffers up to max_pending_write_size and then waits too, bounded the same way
    transport2, raw2 = raw_peer_transport()
    try:
        transport2.write_progress_timeout = 0.3
        with gevent.Timeout(T):
            with pytest.raises(ConnectionLost):
                while True:
                    transport2.write(b'v' * 65536, sync=False)
    finally:
        transport2.loseConnection(wait=False)
        raw2.close()


def test_a_slow_peer_that_keeps_reading_is_not_cut_off():
    # The limit is on each wait for progress, not on a write: a peer reading 64 KiB every 0.1 s takes a
    # 2 MiB chunk in about 3 s while write_progress_timeout is 0.5 s.
    raw, sock = socket_pair(buffer_size=65536)
    local = URI(host='127.0.0.1', port=1, use_tls=False, session_id='local')
    transport = MSRPTransport(local, sock=sock)
    transport.write_progress_timeout = 0.5
    received = []

    def slow_reader():
        while True:
            data = raw.recv(65536)
            if not data:
                return
            received.append(len(data))
            gevent.sleep(0.1)
    reader = gevent.spawn(slow_reader)
    try:
        with gevent.Timeout(3 * T):
            transport.write(b's' * (2 * MiB))
            transport.loseConnection()
            reader.join()
        assert sum(received) == 2 * MiB
    finally:
        reader.kill()
        raw.close()
