"""What an idle MSRPSession costs: one reader greenlet, hub timers for deadlines and keep-alives.

Guards the memory per session of bench/run.py W5: a session that is not
sending must not hold a writer, timer or keep-alive greenlet (each keeps a
saved stack of several KiB), and the timers that replace them must still
produce the 408s and keep-alives they used to.
"""

import gc

import gevent
import greenlet
import pytest

from msrplib.session import GreenMSRPSession

from test_session import TIMEOUT, make_pair, text_message


@pytest.fixture
def pair():
    pair = make_pair(False)
    yield pair
    for session in pair.sessions:
        session.reader_job.kill(block=False)
    pair.active.loseConnection()
    pair.passive.loseConnection()
    gevent.joinall([s.reader_job for s in pair.sessions], timeout=TIMEOUT)


def _live_greenlets():
    gc.collect()
    return [g for g in gc.get_objects() if isinstance(g, greenlet.greenlet) and not g.dead]


def test_idle_session_runs_only_its_reader_greenlet(pair):
    before = len(_live_greenlets())
    a, b = pair.sessions_both_ways()
    gevent.sleep(0.01)
    assert a.writer_job is None and b.writer_job is None
    assert a._keepalive_job is None and a._keepalive_timer is not None  # a hub timer, not a greenlet
    assert len(_live_greenlets()) - before == 2  # the two readers


def test_session_starts_its_writer_when_chunks_queue(pair):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        for i in range(20):  # back to back: the first goes straight out, the others through the writer
            a.send_message(b'%d' % i, 'text/plain')
        assert a.writer_job is not None
        assert [b.receive_chunk().data for _ in range(20)] == [b'%d' % i for i in range(20)]


def test_response_timer_gives_408_and_rearms_for_later_deadlines(pair):
    class Quick(GreenMSRPSession):
        RESPONSE_TIMEOUT = 0.1

    a = pair.session(pair.active, cls=Quick)
    raw = pair.passive
    responses = []
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a, b'first'), responses.append)
        gevent.sleep(0.05)
        a.send_chunk(text_message(a, b'second'), responses.append)
        first = raw.read_chunk()
        raw.write_response(first, 200, 'OK')  # only the first is answered
        while len(responses) < 2:
            gevent.sleep(0.02)
    assert [r.code for r in responses] == [200, 408]
    assert a.expected_responses == {} and a._timer is None
