"""msrplib.bridge: msrplib used from OS threads and asyncio, its gevent hub in a thread of its own.

Every wait is bounded: thread calls take ``timeout``, futures ``result(timeout)``,
asyncio work runs under ``asyncio.wait_for``, subprocesses under ``communicate(timeout)``.
"""

import asyncio
import concurrent.futures
import gc
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from msrplib import bridge
from msrplib.bridge import (AsyncAcceptor, AsyncConnector, ThreadedAcceptor, ThreadedConnector, call,
                            hub_thread)
from msrplib.connect import MSRPConnectError
from msrplib.protocol import URI
from msrplib.session import MSRPSessionError
from msrplib.transport import ConnectionDone, ConnectionLost, MSRPTransactionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 10  # seconds: the bound of every single wait


def local(port=0):
    return URI(host='127.0.0.1', port=port, use_tls=False)


def threaded_pair(**acceptor_options):
    """(bob, alice): two ThreadedSessions connected over loopback, made from this (non-gevent) thread."""
    acceptor = ThreadedAcceptor(**acceptor_options)
    connector = ThreadedConnector()
    alice_path = acceptor.prepare(local(), timeout=STEP)
    bob_path = connector.prepare(local(), timeout=STEP)
    accepted = concurrent.futures.ThreadPoolExecutor(1).submit(acceptor.complete, bob_path, STEP)
    bob = connector.complete(alice_path, timeout=STEP)
    return bob, accepted.result(STEP)


def run_script(code, timeout=60):
    """Run ``code`` in a fresh interpreter; return (returncode, stdout, stderr, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STEP)
    return proc.returncode, out, err, time.monotonic() - start


# -- the hub thread and call()


def test_call_runs_in_the_hub_thread_and_carries_results_and_exceptions():
    assert call(threading.current_thread).result(STEP) is hub_thread()
    assert hub_thread() is not threading.current_thread() and hub_thread().daemon

    def fail():
        raise KeyError('from the hub')
    with pytest.raises(KeyError, match='from the hub'):
        call(fail).result(STEP)


def test_a_future_cancelled_before_it_runs_never_runs():
    blocker = threading.Lock()
    blocker.acquire()
    ran = []
    hold = call(blocker.acquire)          # holds the whole hub thread (on purpose) until released
    try:
        future = call(ran.append, 'ran')
        assert future.cancel()
    finally:
        blocker.release()
    hold.result(STEP)
    assert call(lambda: 'after').result(STEP) == 'after'   # the queue behind has run
    assert future.cancelled() and ran == []


# -- OS threads


SCRIPT = '''
import hashlib, sys
from msrplib.bridge import ThreadedAcceptor
from msrplib.protocol import URI
from msrplib.transport import ConnectionDone

acceptor = ThreadedAcceptor()
print('path:', ' '.join(str(uri) for uri in acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))),
      flush=True)
peer_path = [URI.parse(text) for text in sys.stdin.readline().split()]
session = acceptor.complete(peer_path, timeout=10)
line = session.receive_chunk(timeout=10)
session.deliver_message(line.data.upper(), 'text/plain', timeout=10)
received = bytearray()
while len(received) < 3 * 1024 * 1024:
    received += session.receive_chunk(timeout=10).data
session.deliver_message(hashlib.sha1(received).hexdigest().encode(), 'text/plain', timeout=10)
progress = []
message = session.send_large_message(bytes(range(256)) * 16384, 'application/octet-stream',
                                     progress_cb=lambda m: progress.append(m.bytes_acknowledged))
message.wait(10)
try:
    session.receive_chunk(timeout=10)
except ConnectionDone:
    print('done', 'gevent' in globals(), len(progress) > 0, flush=True)
'''


def test_plain_threaded_script_chats_with_a_green_session():
    import gevent
    from gevent.subprocess import PIPE, Popen
    from msrplib.connect import ConnectorDirect
    from msrplib.session import GreenMSRPSession

    assert 'import gevent' not in SCRIPT and 'from gevent' not in SCRIPT
    proc = Popen([sys.executable, '-c', SCRIPT], cwd=ROOT, stdin=PIPE, stdout=PIPE, stderr=PIPE, text=True)
    try:
        with gevent.Timeout(30):
            line = proc.stdout.readline()
            assert line.startswith('path: '), (line, proc.stderr.read())
            script_path = [URI.parse(text) for text in line.split()[1:]]
            connector = ConnectorDirect()
            my_path = connector.prepare(local())
            proc.stdin.write(' '.join(str(uri) for uri in my_path) + '\n')
            proc.stdin.flush()
            session = GreenMSRPSession(connector.complete(script_path))
            session.deliver_message(b'hello script', 'text/plain')
            assert session.receive_chunk().data == b'HELLO SCRIPT'
            big = os.urandom(3 * 1024 * 1024)
            session.send_large_message(big, 'application/octet-stream').wait()
            assert session.receive_chunk().data == hashlib.sha1(big).hexdigest().encode()
            received = bytearray()
            while len(received) < 4 * 1024 * 1024:
                received += session.receive_chunk().data
            assert bytes(received) == bytes(range(256)) * 16384
            session.shutdown()
            assert proc.stdout.readline().split() == ['done', 'False', 'True']
            assert proc.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_threaded_sessions_callbacks_run_on_the_executor():
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='mine')
    acceptor = ThreadedAcceptor(executor=executor)
    connector = ThreadedConnector(executor=executor)
    alice_path = acceptor.prepare(local(), timeout=STEP)
    bob_path = connector.prepare(local(), timeout=STEP)
    accepted = concurrent.futures.ThreadPoolExecutor(1).submit(acceptor.complete, bob_path, STEP)
    bob = connector.complete(alice_path, timeout=STEP)
    alice = accepted.result(STEP)
    seen = []
    ended = threading.Event()

    def incoming(chunk, error=None):
        seen.append((threading.current_thread().name, chunk.data if chunk is not None else type(error)))
        if error is not None:
            ended.set()
    alice.on_incoming(incoming)
    responses = []
    got_response = threading.Event()

    def response_cb(response):
        responses.append((threading.current_thread().name, response.code))
        got_response.set()
    bob.send_chunk(bob.make_message(b'one', 'text/plain'), response_cb, timeout=STEP)
    assert got_response.wait(STEP)
    progress = []
    bob.send_large_message(b'x' * 300000, 'text/plain', progress_cb=lambda m: progress.append(
        threading.current_thread().name)).wait(STEP)
    bob.shutdown(timeout=STEP)
    assert ended.wait(STEP)
    assert responses[0][1] == 200 and responses[0][0].startswith('mine')
    assert progress and all(name.startswith('mine') for name in progress)
    assert seen[0] == (seen[0][0], b'one') and seen[-1][1] is ConnectionDone
    assert all(name.startswith('mine') for name, _ in seen)
    assert b''.join(data for _, data in seen[1:-1]) == b'x' * 300000


def test_refused_connection_raises_the_classic_error():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]     # closed again below: nobody listens there
    connector = ThreadedConnector()
    connector.prepare(local(), timeout=STEP)
    with pytest.raises(MSRPConnectError):
        connector.complete([URI(host='127.0.0.1', port=port, use_tls=False, session_id='abc')], timeout=STEP)


def test_a_4xx_response_raises_msrp_transaction_error():
    bob, alice = threaded_pair(accept_types=['text/plain'])
    with pytest.raises(MSRPTransactionError) as info:
        bob.deliver_message(b'<img>', 'image/png', timeout=STEP)
    assert info.value.code == 415
    assert bob.deliver_message(b'still fine', 'text/plain', timeout=STEP).code == 200
    assert alice.receive_chunk(timeout=STEP).data == b'still fine'
    bob.shutdown(timeout=STEP)
    alice.shutdown(timeout=STEP)


def test_session_ending_while_calls_are_in_flight():
    bob, alice = threaded_pair()
    pool = concurrent.futures.ThreadPoolExecutor(2)
    receiving = pool.submit(alice.receive_chunk, STEP)        # blocked in alice's thread
    message = bob.send_large_message(b'y' * (64 * 1024 * 1024), 'application/octet-stream')
    time.sleep(0.2)                                            # (alice reads nothing more: back-pressure)
    assert receiving.result(STEP).data                         # the first chunk reached the waiting call
    call(alice.session.msrp.loseConnection).result(STEP)       # alice's side goes away mid-message
    with pytest.raises(MSRPTransactionError):
        message.wait(STEP)
    drained = 0
    with pytest.raises((ConnectionDone, ConnectionLost)):   # Lost when alice's close met bob's unread chunks (reset)
        while True:
            bob.receive_chunk(timeout=STEP)
            drained += 1
    with pytest.raises(MSRPSessionError):
        bob.deliver_message(b'too late', 'text/plain', timeout=STEP)


def test_receive_timeout_loses_no_chunk():
    bob, alice = threaded_pair()
    with pytest.raises(TimeoutError):
        alice.receive_chunk(timeout=0.05)
    bob.deliver_message(b'after the timeout', 'text/plain', timeout=STEP)
    assert alice.receive_chunk(timeout=STEP).data == b'after the timeout'
    bob.shutdown(timeout=STEP)


def test_interpreter_exit_with_a_session_open_and_a_call_in_flight():
    code = '''
        import threading
        from msrplib.bridge import ThreadedAcceptor, ThreadedConnector
        from msrplib.protocol import URI
        acceptor, connector = ThreadedAcceptor(), ThreadedConnector()
        a = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        c = connector.prepare(URI(host='127.0.0.1', use_tls=False))
        result = {}
        t = threading.Thread(target=lambda: result.setdefault('alice', acceptor.complete(c, timeout=10)))
        t.start()
        bob = connector.complete(a, timeout=10)
        t.join(10)
        threading.Thread(target=result['alice'].receive_chunk, daemon=True).start()   # still waiting at exit
        bob.deliver_message(b'hi', 'text/plain', timeout=10)
        print('exiting', flush=True)
    '''
    returncode, out, err, seconds = run_script(code, timeout=30)
    assert (returncode, out) == (0, 'exiting\n'), err
    assert seconds < 10


def test_stop_fails_the_calls_in_flight_and_refuses_new_ones():
    code = """
        import concurrent.futures, threading
        from msrplib import bridge
        from msrplib.bridge import BridgeClosed, ThreadedAcceptor, ThreadedConnector
        from msrplib.protocol import URI
        acceptor, connector = ThreadedAcceptor(), ThreadedConnector()
        a = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        c = connector.prepare(URI(host='127.0.0.1', use_tls=False))
        pool = concurrent.futures.ThreadPoolExecutor(2)
        alice = pool.submit(acceptor.complete, c, 10)
        bob = connector.complete(a, timeout=10)
        receiving = pool.submit(alice.result(10).receive_chunk)          # no timeout: only stop() ends it
        blocker = threading.Lock()
        blocker.acquire()
        hold = bridge.call(blocker.acquire)
        queued = bridge.call(print, 'never runs')                         # queued behind the held hub
        threading.Timer(0.5, blocker.release).start()
        bridge.stop()
        for future in (receiving, queued):
            try:
                future.result(10)
            except BridgeClosed:
                print('closed')
        try:
            bridge.call(print, 'after stop')
        except BridgeClosed:
            print('refused')
    """
    returncode, out, err, seconds = run_script(code, timeout=30)
    assert (returncode, out) == (0, 'closed\nclosed\nrefused\n'), err


# -- asyncio


async def async_pair(**acceptor_options):
    acceptor = AsyncAcceptor(**acceptor_options)
    connector = AsyncConnector()
    alice_path = await acceptor.prepare(local())
    bob_path = await connector.prepare(local())
    bob, alice = await asyncio.gather(connector.complete(alice_path), acceptor.complete(bob_path))
    return bob, alice


def run(coroutine, timeout=60):
    async def bounded():
        return await asyncio.wait_for(coroutine, timeout)
    return asyncio.run(bounded())


TICK = 0.005    # seconds: the ticker's sleep

# The same ticking in a process of its own, without msrplib, for the duration of a measurement (until its
# stdin closes); prints how late it was woken at worst.  When even it was kept waiting, the machine is
# overloaded (other processes hogging the CPUs) and a late loop says nothing about msrplib.
CONTROL_TICKER = '''
import sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
worst, last = 0.0, time.monotonic()
print('ticking', flush=True)
while not stop.is_set():
    time.sleep(%r)
    now = time.monotonic()
    worst, last = max(worst, now - last), now
print(worst - %r if worst else 0.0, flush=True)
'''


class ControlTicker:
    """CONTROL_TICKER run for the duration of a ``with`` block; then ``stall``: how late it was woken at worst."""

    def __init__(self, tick):
        self.tick = tick
        self.stall = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, '-c', CONTROL_TICKER % (self.tick, self.tick)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == 'ticking\n'     # ('' at once if it died: its pipe is closed)
        return self

    def __exit__(self, *exc_info):
        try:
            if exc_info[0] is None:
                self.stall = float(self.proc.communicate('', timeout=STEP)[0])
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(STEP)

    def skip_if_the_machine_stalled(self, limit, what):
        """Skip the test when the control process itself was woken ``limit`` seconds late or more."""
        if self.stall >= limit:
            pytest.skip('the machine itself kept processes from running (a process with no msrplib in it was '
                        'woken %.0f ms late; %s): no conclusion' % (1000 * self.stall, what))


def test_asyncio_loop_never_stalls_through_connect_transfer_and_hangup():
    size = 100 * 1024 * 1024
    gaps = []        # seconds between ticks: the 5 ms asked for, plus however late the loop was

    async def ticker(stop):
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(TICK)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    payload = b'z' * size        # test data, made before the clock starts

    async def main():
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        bob, alice = await async_pair()
        progress = []
        message = await bob.send_large_message(payload, 'application/octet-stream',
                                               progress_cb=lambda m: progress.append((threading.current_thread(), m.bytes_acknowledged)))
        received = 0
        async for chunk in alice:
            received += len(chunk.data)
            if received == size:
                break
        await message.wait()
        await bob.shutdown()
        with pytest.raises(ConnectionDone):
            await alice.receive_chunk()
        stop.set()
        await ticking
        return received, progress
    # A full collection of this pytest process's heap (some 50,000 objects) holds the GIL for 20-80 ms on a
    # busy machine, whichever thread happens to trigger it: that is the host's garbage, not a wait in
    # msrplib.  Collect it now and freeze it (as a latency-sensitive program does after start-up).
    gc.collect()
    gc.freeze()
    try:
        with ControlTicker(TICK) as control:
            received, progress = run(main())
    finally:
        gc.unfreeze()
    assert received == size and progress[-1][1] == size
    assert {thread for thread, _ in progress} == {threading.main_thread()}   # callbacks on the loop's thread
    assert len(gaps) > 10
    stall = max(gaps) - TICK          # the longest the loop was kept from running a ready task
    print('max loop gap %.1f ms (stall %.1f ms) over %d ticks; control process stall %.1f ms'
          % (1000 * max(gaps), 1000 * stall, len(gaps), 1000 * control.stall))
    if stall >= 0.020:
        control.skip_if_the_machine_stalled(0.010, 'the loop was %.0f ms late' % (1000 * stall))
    assert stall < 0.020, sorted(gaps)[-5:]


def test_asyncio_cancelled_receive_keeps_the_chunk_for_the_next_one():
    async def main():
        bob, alice = await async_pair()
        waiting = asyncio.create_task(alice.receive_chunk())
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await bob.deliver_message(b'for whoever asks next', 'text/plain')
        chunk = await alice.receive_chunk()
        await bob.shutdown()
        return chunk.data
    assert run(main()) == b'for whoever asks next'


def test_asyncio_cancelled_complete_stops_waiting_for_the_peer():
    async def main():
        acceptor = AsyncAcceptor()
        path = await acceptor.prepare(local())
        task = asyncio.create_task(acceptor.complete([URI(host='127.0.0.1', port=1, use_tls=False,
                                                          session_id='nobody')]))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await acceptor.cleanup()
        elapsed = time.monotonic() - start
        # the listening port is released (gevent closes the socket from its loop, so allow it a moment)
        deadline = time.monotonic() + STEP
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(('127.0.0.1', path[-1].port)) != 0:
                    break
            assert time.monotonic() < deadline, 'still listening after cleanup()'
            await asyncio.sleep(0.01)
        return elapsed
    assert run(main()) < 1


def test_asyncio_errors_cross_the_bridge():
    async def main():
        bob, alice = await async_pair(accept_types=['text/plain'])
        with pytest.raises(MSRPTransactionError) as info:
            await bob.deliver_message(b'<img>', 'image/png')
        await bob.shutdown()
        with pytest.raises(MSRPSessionError):
            await bob.deliver_message(b'late', 'text/plain')
        return info.value.code
    assert run(main()) == 415

