"""The closure exceptions are Twisted's (twisted.internet.error) when Twisted is installed, and plain otherwise.

Classic callers test a session's end with ``failure.check(ConnectionDone)``
and catch ``read_chunk()``'s closure with ``except ConnectionDone``, both with
Twisted's classes.  Twisted is in the test extras (setup.py), so these tests
run with it; one runs a child Python in which Twisted cannot be imported.
"""

import os
import subprocess
import sys
import textwrap

import gevent
import pytest

from msrplib import transport
from msrplib.session import Failure, GreenMSRPSession, MSRPSession

twisted_error = pytest.importorskip('twisted.internet.error')
twisted_failure = pytest.importorskip('twisted.python.failure')

from test_session import TIMEOUT, Recorder, make_pair  # noqa: E402  (after the skips)


@pytest.mark.parametrize('name', ['ConnectionClosed', 'ConnectionDone', 'ConnectionLost'])
def test_each_class_derives_from_twisteds_class_of_the_same_name(name):
    assert issubclass(getattr(transport, name), getattr(twisted_error, name))


def test_done_is_not_lost_and_the_messages_are_ours():
    assert not issubclass(transport.ConnectionLost, twisted_error.ConnectionDone)
    assert not issubclass(transport.ConnectionDone, twisted_error.ConnectionLost)
    assert str(transport.ConnectionDone()) == 'Connection was closed cleanly.'
    assert str(transport.ConnectionLost('reset by peer')) == 'reset by peer'


def test_twisted_failure_check_sees_our_exceptions():
    failure = twisted_failure.Failure(transport.ConnectionDone())
    assert failure.check(twisted_error.ConnectionDone) is twisted_error.ConnectionDone
    assert failure.check(twisted_error.ConnectionLost) is None
    assert Failure(transport.ConnectionLost()).check(twisted_error.ConnectionLost) is twisted_error.ConnectionLost


@pytest.fixture
def pair():
    pair = make_pair(False)
    yield pair
    pair.active.loseConnection()
    pair.passive.loseConnection()


def test_a_clean_hang_up_is_twisteds_connection_done_for_both_sides(pair):
    recorder = Recorder()
    a = MSRPSession(pair.active, on_incoming_cb=recorder)
    b = GreenMSRPSession(pair.passive)
    with gevent.Timeout(TIMEOUT):
        a.shutdown()
        with pytest.raises(twisted_error.ConnectionDone):
            b.receive_chunk()
        recorder.ended.wait()
    for failure in (recorder.errors[0], b._end_failure):
        assert failure.check(twisted_error.ConnectionDone)
        assert not failure.check(twisted_error.ConnectionLost)


def test_read_chunk_after_the_peer_closes_raises_twisteds_connection_done(pair):
    with gevent.Timeout(TIMEOUT):
        pair.passive.loseConnection()
        try:
            pair.active.read_chunk()
        except twisted_error.ConnectionDone as e:
            caught = e
    assert isinstance(caught, transport.ConnectionDone)


def test_without_twisted_the_classes_are_plain_and_twisted_is_not_imported():
    code = textwrap.dedent('''
        import sys
        sys.modules['twisted'] = None   # Twisted cannot be imported
        from msrplib import transport
        assert [m for m in sys.modules if m.startswith('twisted.')] == [], 'Twisted was imported'
        assert transport.ConnectionDone.__mro__[1:] == (transport.ConnectionClosed, Exception, BaseException, object)
        assert transport.ConnectionClosed.__bases__ == (Exception,)
        assert str(transport.ConnectionLost()) == transport.ConnectionLost.default_message
        from msrplib.session import Failure
        assert Failure(transport.ConnectionDone()).check(transport.ConnectionDone)
        print('ok')
    ''')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


def test_with_twisted_installed_but_not_yet_imported_msrplib_finds_it():
    code = textwrap.dedent('''
        import sys
        assert 'twisted' not in sys.modules
        from msrplib import transport
        import twisted.internet.error as error
        assert issubclass(transport.ConnectionDone, error.ConnectionDone)
        print('ok')
    ''')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
