"""msrplib.bridge's Twisted facade: Deferreds fired, and callbacks run, in the reactor thread.

Every check runs a reactor in a subprocess (the global reactor cannot be
restarted, and must not leak into other tests); every wait is bounded: the
scripts stop their reactor after a deadline, and ``communicate(timeout)``
bounds the subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('twisted')

from test_bridge import ControlTicker, run_script  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = '''
import json, sys, threading, time
from twisted.internet import defer, reactor, task
from msrplib.bridge import TwistedAcceptor, TwistedConnector
from msrplib.protocol import URI

def local():
    return URI(host='127.0.0.1', port=0, use_tls=False)

@defer.inlineCallbacks
def pair(**acceptor_options):
    acceptor, connector = TwistedAcceptor(**acceptor_options), TwistedConnector()
    alice_path = yield acceptor.prepare(local())
    bob_path = yield connector.prepare(local())
    bob, alice = yield defer.gatherResults([connector.complete(alice_path), acceptor.complete(bob_path)])
    return bob, alice

def run(main, deadline):
    """Run ``main()`` (a Deferred) in the reactor; print its JSON result; exit 3 after ``deadline`` s."""
    outcome = {}
    def finish(result):
        outcome['result'] = result
        reactor.stop()
    def fail(failure):
        failure.printTraceback(file=sys.stderr)
        reactor.stop()
    def too_late():
        print('deadline passed', file=sys.stderr)
        reactor.stop()
    reactor.callWhenRunning(lambda: main().addCallbacks(finish, fail))
    reactor.callLater(deadline, too_late)
    reactor.run()
    if 'result' not in outcome:
        sys.exit(3)
    print(json.dumps(outcome['result']), flush=True)
'''


def run_reactor_script(body, timeout=90):
    """Run PRELUDE + ``body`` in a fresh interpreter; return (its JSON result, seconds)."""
    returncode, out, err, seconds = run_script(PRELUDE + textwrap.dedent(body), timeout)
    assert returncode == 0, err
    return json.loads(out.splitlines()[-1]), seconds


def test_reactor_keeps_ticking_through_connect_a_100_mib_transfer_and_hangup():
    with ControlTicker(0.01) as control:
        result, _ = run_reactor_script('''
        SIZE = 100 * 1024 * 1024
        payload = b'z' * SIZE                  # made before the clock starts
        ticks = {'calls': 0, 'missed': 0, 'last': None, 'max_gap': 0.0}

        def tick(count):                       # count: intervals elapsed since the previous call
            now = time.monotonic()
            if ticks['last'] is not None:
                ticks['max_gap'] = max(ticks['max_gap'], now - ticks['last'])
            ticks['last'] = now
            ticks['calls'] += 1
            ticks['missed'] += count - 1

        @defer.inlineCallbacks
        def main():
            looping = task.LoopingCall.withCount(tick)
            looping.start(0.01, now=True)
            bob, alice = yield pair()
            received = {'bytes': 0, 'threads': set()}
            ended = defer.Deferred()

            def incoming(chunk, error=None):
                received['threads'].add(threading.current_thread().name)
                if chunk is None:
                    ended.callback(error.type.__name__)
                else:
                    received['bytes'] += len(chunk.data)
            alice.on_incoming(incoming)
            progress = []
            message = yield bob.send_large_message(payload, 'application/octet-stream',
                                                   progress_cb=lambda m: progress.append(
                                                       threading.current_thread().name))
            yield message.wait()
            yield bob.shutdown()
            end = yield ended
            looping.stop()
            return {'received': received['bytes'], 'end': end, 'ticks': ticks['calls'], 'missed': ticks['missed'],
                    'max_gap_ms': round(1000 * ticks['max_gap'], 1), 'acknowledged': message.message.bytes_acknowledged,
                    'callback_threads': sorted(received['threads'] | set(progress)),
                    'reactor_thread': threading.current_thread().name}
        run(main, 80)
    ''', timeout=120)
    print(result, 'control process stall %.1f ms' % (1000 * control.stall))
    assert result['received'] == result['acknowledged'] == 100 * 1024 * 1024
    assert result['end'] == 'ConnectionDone'
    assert result['callback_threads'] == [result['reactor_thread']] == ['MainThread']
    assert result['ticks'] > 10
    if result['missed'] > 3:
        control.skip_if_the_machine_stalled(0.010, '%d ticks of the reactor missed' % result['missed'])
    assert result['missed'] <= 3, result


FUNCTIONAL = '''
    from twisted.internet.defer import CancelledError
    from msrplib.connect import MSRPConnectError
    from msrplib.session import MSRPSessionError
    from msrplib.transport import ConnectionClosed, ConnectionDone, MSRPTransactionError
    import socket

    @defer.inlineCallbacks
    def main():
        out = {}
        # errors: a 4xx response is a Failure wrapping MSRPTransactionError, with its code
        bob, alice = yield pair(accept_types=['text/plain'])
        try:
            yield bob.deliver_message(b'<img>', 'image/png')
        except MSRPTransactionError as e:
            out['415'] = e.code
        response = yield bob.deliver_message(b'fine', 'text/plain')
        chunk = yield alice.receive_chunk()
        out['after_415'] = [response.code, chunk.data.decode()]
        # response_cb and Deferreds run in the reactor thread
        seen = defer.Deferred()
        chunk = yield bob.make_message(b'with a callback', 'text/plain')
        yield bob.send_chunk(chunk, lambda response: seen.callback((response.code, threading.current_thread().name)))
        out['response_cb'] = list((yield seen))
        yield alice.receive_chunk()
        # cancelling a receive keeps the next chunk for the next receive
        waiting = alice.receive_chunk()
        waiting.cancel()
        try:
            yield waiting
        except CancelledError:
            out['cancelled'] = True
        yield bob.deliver_message(b'for whoever asks next', 'text/plain')
        out['next'] = (yield alice.receive_chunk()).data.decode()
        # on_incoming: a callback's Deferred holds the next chunk back; the end comes as a Failure
        events = []
        ended = defer.Deferred()

        def incoming(chunk, error=None):
            if chunk is None:
                events.append(('end', error.check(ConnectionDone).__name__, threading.current_thread().name))
                ended.callback(None)
                return None
            events.append(('start', chunk.data.decode()))
            return task.deferLater(reactor, 0.05, events.append, ('done', chunk.data.decode()))
        alice.on_incoming(incoming)
        for text in ('a', 'b', 'c'):
            yield bob.send_message(text.encode(), 'text/plain')
        yield task.deferLater(reactor, 0.3, lambda: None)
        yield bob.shutdown()
        yield ended
        out['on_incoming'] = [list(event) for event in events]
        try:
            yield bob.deliver_message(b'late', 'text/plain')
        except MSRPSessionError:
            out['after_shutdown'] = 'MSRPSessionError'

        # refused connection: MSRPConnectError
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()
        connector = TwistedConnector()
        yield connector.prepare(local())
        try:
            yield connector.complete([URI(host='127.0.0.1', port=port, use_tls=False, session_id='abc')])
        except MSRPConnectError:
            out['refused'] = 'MSRPConnectError'

        # cancelling complete() stops waiting for the peer at once
        acceptor = TwistedAcceptor()
        yield acceptor.prepare(local())
        waiting = acceptor.complete([URI(host='127.0.0.1', port=1, use_tls=False, session_id='nobody')])
        yield task.deferLater(reactor, 0.1, lambda: None)
        start = time.monotonic()
        waiting.cancel()
        try:
            yield waiting
        except CancelledError:
            out['complete_cancelled_in'] = time.monotonic() - start
        yield acceptor.cleanup()

        # the session ends while calls are in flight
        bob, alice = yield pair()
        receiving = alice.receive_chunk()
        message = yield bob.send_large_message(b'y' * (64 * 1024 * 1024), 'application/octet-stream')
        first = yield receiving
        out['first_chunk'] = len(first.data) > 0
        bob_end = bob.receive_chunk()                        # in flight when alice goes away
        yield in_hub(alice.session.msrp.loseConnection)      # alice's side goes away mid-message
        try:
            yield message.wait()
        except MSRPTransactionError as e:
            out['message_failed'] = e.code
        try:
            while True:
                yield bob_end
                bob_end = bob.receive_chunk()
        except ConnectionClosed as e:     # Done or Lost: alice closed with bob's chunks unread (a reset)
            out['receive_ended'] = type(e).__name__
        return out

    def in_hub(function):
        # ``function()`` run in the hub thread (bridge.call), as a Deferred fired in the reactor thread
        from msrplib import bridge
        fired = defer.Deferred()
        bridge.call(function).add_done_callback(lambda future: reactor.callFromThread(fired.callback, future.result()))
        return fired
    run(main, 60)
'''


@pytest.fixture(scope='module')
def functional():
    result, _ = run_reactor_script(FUNCTIONAL)
    print(result)
    return result


def test_a_4xx_response_is_a_failure_wrapping_msrp_transaction_error(functional):
    assert functional['415'] == 415
    assert functional['after_415'] == [200, 'fine']
    assert functional['after_shutdown'] == 'MSRPSessionError'


def test_callbacks_run_in_the_reactor_thread(functional):
    assert functional['response_cb'] == [200, 'MainThread']


def test_on_incoming_waits_for_the_callbacks_deferred_and_ends_with_a_failure(functional):
    assert functional['on_incoming'] == [['start', 'a'], ['done', 'a'], ['start', 'b'], ['done', 'b'],
                                         ['start', 'c'], ['done', 'c'], ['end', 'ConnectionDone', 'MainThread']]


def test_refused_connection_is_a_failure_wrapping_msrp_connect_error(functional):
    assert functional['refused'] == 'MSRPConnectError'


def test_cancelled_receive_keeps_the_chunk_for_the_next_one(functional):
    assert functional['cancelled'] is True
    assert functional['next'] == 'for whoever asks next'


def test_cancelled_complete_stops_waiting_for_the_peer(functional):
    assert functional['complete_cancelled_in'] < 1


def test_session_ending_while_calls_are_in_flight(functional):
    assert functional['first_chunk'] is True
    assert functional['message_failed'] == 408        # unfinished when the session ended
    assert functional['receive_ended'] in ('ConnectionDone', 'ConnectionLost')


def test_interpreter_exit_with_sessions_open_and_deferreds_pending():
    result, seconds = run_reactor_script('''
        @defer.inlineCallbacks
        def main():
            bob, alice = yield pair()
            alice.receive_chunk()                   # still pending at exit
            bob.on_incoming(lambda chunk, error=None: None)
            yield bob.deliver_message(b'hi', 'text/plain')
            return 'exiting'
        run(main, 20)
    ''', timeout=30)
    assert result == 'exiting'
    assert seconds < 10


def test_the_bridge_works_without_twisted():
    code = '''
import sys
sys.modules['twisted'] = None          # as if Twisted were not installed: importing it raises ImportError
from msrplib import bridge
assert bridge.call(lambda: 'ran').result(10) == 'ran'
try:
    bridge.TwistedConnector()
except ImportError:
    print('no twisted')
'''
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, 'no twisted\n'), result.stderr
