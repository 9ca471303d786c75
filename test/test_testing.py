"""msrplib.testing (session_pair, RawPeer, WireCapture, KamailioRelay) and its pytest plugin, on real sockets."""

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import gevent
import pytest

import msrplib.testing
from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import URI, LimitExceeded, SuccessReportHeader
from msrplib.session import GreenMSRPSession, MSRPSession
from msrplib.testing import RawPeer, WaitTimeout, WireCapture, session_pair
from msrplib.testing import kamailio as kamailio_module
from msrplib.testing.pytest_plugin import require_kamailio
from msrplib.transport import ConnectionLost

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
T = 10


def chat(sender, receiver, text):
    chunk = sender.make_message(text, 'text/plain')
    chunk.add_header(SuccessReportHeader('yes'))
    with gevent.Timeout(T):
        assert sender.deliver_chunk(chunk).code == 200
        received = receiver.receive_chunk()
        report = sender.receive_chunk()
    assert received.data == text.encode()
    assert (report.method, report.status.code, report.message_id) == ('REPORT', 200, chunk.message_id)


# ---------------------------------------------------------------------------
# session_pair

@pytest.mark.parametrize('tls', [False, True], ids=['tcp', 'tls'])
def test_session_pair_gives_two_bound_sessions_and_closes_them(tls):
    with session_pair(tls=tls) as pair:
        active, passive = pair
        assert (pair.active, pair.passive) == (active, passive)
        assert active.msrp.local_uri.use_tls is tls and passive.msrp.local_uri.use_tls is tls
        chat(active, passive, 'hello')
        chat(passive, active, 'hello back')
    with gevent.Timeout(T):
        for session in pair:
            session.reader_job.join()
    assert all(session.reader_job.dead for session in pair)
    assert not active.msrp.connected and not passive.msrp.connected


def test_session_pair_tls_checks_the_fingerprint(monkeypatch):
    # the connector is given the acceptor's fingerprint: a wrong one must make the pair fail
    monkeypatch.setattr(AcceptorDirect, 'prepare', _prepare_with_a_wrong_fingerprint(AcceptorDirect.prepare))
    from msrplib.tls import MSRPCertificateError
    with pytest.raises(MSRPCertificateError):
        with session_pair(tls=True, timeout=5):
            pass


def _prepare_with_a_wrong_fingerprint(prepare):
    def wrapped(self, *args, **kwargs):
        path = prepare(self, *args, **kwargs)
        self.fingerprint = 'sha-256 ' + ':'.join(['AB'] * 32)
        return path
    return wrapped


def test_session_pair_makes_sessions_of_cls_with_the_session_kwargs():
    seen = []
    with session_pair(cls=MSRPSession, accept_types=['text/plain'],
                      on_incoming_cb=lambda chunk=None, error=None: seen.append(chunk)) as (active, passive):
        assert type(active) is MSRPSession and passive.accept_types == ['text/plain']
        active.send_chunk(active.make_message('x', 'text/plain'))
        with gevent.Timeout(T):
            while not any(chunk is not None and chunk.method == 'SEND' for chunk in seen):
                gevent.sleep(0.01)


def test_session_pair_timeout_says_what_it_waited_for(monkeypatch):
    def never(self, full_remote_path):
        gevent.sleep(60)
    monkeypatch.setattr(ConnectorDirect, 'complete', never)
    with pytest.raises(WaitTimeout, match='waiting for the loopback MSRP connection'):
        with session_pair(timeout=0.2):
            pass


# ---------------------------------------------------------------------------
# RawPeer

def test_raw_peer_passive_binds_an_application_and_sees_its_chunks():
    with RawPeer() as peer:
        path = peer.listen()
        connector = ConnectorDirect()
        local = connector.prepare(URI(host='127.0.0.1', use_tls=False))
        job = gevent.spawn(connector.complete, [URI.parse(path)])
        peer.accept()
        binding = peer.expect(method='SEND', headers={'To-Path': path, 'Byte-Range': '1-0/0'}, respond=200)
        assert binding.header('From-Path') == str(local[0]) == peer.remote_path
        session = GreenMSRPSession(job.get(timeout=T))
        try:
            chunk = session.make_message('hi', 'text/plain')
            responses = []
            session.send_chunk(chunk, responses.append)
            got = peer.expect(method='SEND', headers={'Message-ID': chunk.message_id,
                                                      'Content-Type': re.compile('^text/'),
                                                      'Success-Report': None}, body=b'hi')
            assert responses == []          # not answered yet: the raw peer answers only when told
            peer.respond(got, 403, 'Go away')
            with gevent.Timeout(T):
                while not responses:
                    gevent.sleep(0.01)
            assert responses[0].code == 403
        finally:
            session.msrp.loseConnection(wait=False)


def _bound_acceptor_and_peer(peer):
    acceptor = AcceptorDirect()
    acceptor_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=peer.tls))
    job = gevent.spawn(acceptor.complete, [URI.parse(peer.prepare())])
    peer.connect(acceptor_path)
    assert peer.bind().code == 200
    return GreenMSRPSession(job.get(timeout=T))


@pytest.mark.parametrize('tls', [False, True], ids=['tcp', 'tls'])
def test_raw_peer_active_sends_chunks_split_anywhere(tls):
    with RawPeer(tls=tls) as peer:
        session = _bound_acceptor_and_peer(peer)
        try:
            tid = peer.send(body=b'split in pieces', split_at=range(1, 400, 7), delay=0.001)
            assert peer.wait_response(tid).code == 200
            with gevent.Timeout(T):
                assert session.receive_chunk().data == b'split in pieces'
            tid = peer.send(body=b'abc', byte_range='5-3/10')    # malformed: end before start
            assert peer.wait_response(tid).code == 400
        finally:
            session.msrp.loseConnection(wait=False)


def test_raw_peer_expect_fails_with_the_mismatch_and_times_out_with_what_it_waited_for():
    with RawPeer() as peer:
        session = _bound_acceptor_and_peer(peer)
        try:
            session.send_chunk(session.make_message('one', 'text/plain'))
            with pytest.raises(AssertionError, match=r"body b'one' does not match b'two'"):
                peer.expect(method='SEND', body=b'two')
            with pytest.raises(WaitTimeout, match=r"waiting for a chunk with method='REPORT'"):
                peer.expect(method='REPORT', timeout=0.2)
        finally:
            session.msrp.loseConnection(wait=False)


def test_raw_peer_reset_is_a_connection_lost_at_the_application():
    with RawPeer() as peer:
        session = _bound_acceptor_and_peer(peer)
        peer.send_raw(b'MSRP abcd SEND\r\nTo-Path: ')     # the middle of a chunk
        gevent.sleep(0.05)
        peer.reset()
        with gevent.Timeout(T), pytest.raises(ConnectionLost):
            session.receive_chunk()


def test_raw_peer_wait_closed_sees_the_application_hang_up():
    with RawPeer() as peer:
        session = _bound_acceptor_and_peer(peer)
        session.msrp.loseConnection(wait=False)
        peer.wait_closed()
        with pytest.raises(AssertionError, match='connection closed'):
            peer.next_frame(timeout=1)


# ---------------------------------------------------------------------------
# WireCapture

def test_wire_capture_records_chunks_in_and_out_with_direction():
    with session_pair() as (active, passive), WireCapture() as wire:
        wire.watch(active)
        chat(active, passive, 'watched')
        sent = wire.wait_for('out', method='SEND')
        assert sent[0].data == b'watched'
        assert [c.code for c in wire.chunks('in', code=200)] == [200]
        assert [c.status.code for c in wire.chunks('in', method='REPORT')] == [200]
        assert all(record.transport is active.msrp for record in wire.records)
        wire.unwatch(active)
        previous = len(wire.records)
        chat(active, passive, 'not watched')
        assert len(wire.records) == previous
        with pytest.raises(WaitTimeout, match="chunk\\(s\\) with direction='in', method='NOPE'"):
            wire.wait_for('in', method='NOPE', timeout=0.1)


# ---------------------------------------------------------------------------
# KamailioRelay and the plugin

def test_kamailio_template_is_package_data_next_to_the_module():
    assert os.path.dirname(kamailio_module.TEMPLATE) == os.path.dirname(msrplib.testing.__file__)
    assert os.path.isfile(kamailio_module.TEMPLATE)
    assert not os.path.exists(os.path.join(HERE, 'relay', 'kamailio.cfg.in'))     # moved, not copied


def test_kamailio_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(kamailio_module, 'kamailio_available', lambda: False)
    relay = kamailio_module.KamailioRelay()
    try:
        with pytest.raises(kamailio_module.KamailioRelayError, match=re.escape(kamailio_module.INSTALL_COMMAND)):
            relay.start()
    finally:
        relay.close()


def test_missing_kamailio_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(kamailio_module, 'kamailio_available', lambda: False)
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception, match='CI=true'):
        require_kamailio()
    monkeypatch.delenv('CI')
    with pytest.raises(pytest.skip.Exception, match='apt-get install'):
        require_kamailio()


@pytest.mark.parametrize('tls', [False, True], ids=['tcp', 'tls'])
def test_session_pair_through_the_relay(msrp_relay, tls):
    with session_pair(tls=tls, relay=msrp_relay) as (active, passive):
        first_hop = active.msrp.full_remote_path[0]          # the relay, then bob's URI at it
        assert (first_hop.port, first_hop.use_tls) == (msrp_relay.tls_port if tls else msrp_relay.port, tls)
        chat(active, passive, 'via kamailio')


def test_plugin_fixtures(msrp_session_pair, msrp_raw_peer, msrp_wire):
    active, passive = msrp_session_pair()
    msrp_wire.watch(passive)
    chat(active, passive, 'fixture')
    assert msrp_wire.chunks('in', method='SEND')[0].data == b'fixture'
    peer = msrp_raw_peer()
    assert peer.listen().startswith('msrp://127.0.0.1:')


def test_msrplib_testing_imports_nothing_test_only():
    # an installed msrplib without the test extras must import msrplib.testing
    code = ('import sys, msrplib.testing\n'
            'bad = [m for m in ("pytest", "trustme", "psutil", "hypothesis") if m in sys.modules]\n'
            'assert not bad, bad\n')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=60, cwd=tempfile.gettempdir())


def test_an_outside_project_gets_the_fixtures_without_a_conftest():
    test = textwrap.dedent('''
        import gevent

        def test_echo(msrp_session_pair):
            alice, bob = msrp_session_pair()
            alice.send_chunk(alice.make_message('ping', 'text/plain'))
            with gevent.Timeout(10):
                assert bob.receive_chunk().data == b'ping'
    ''')
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, 'test_outside.py'), 'w') as f:
            f.write(test)
        result = run_pytest_in(directory, '--rootdir', directory, 'test_outside.py')
    assert result.returncode == 0, result.stdout + result.stderr
    assert '1 passed' in result.stdout


def run_pytest_in(directory, *args):
    """pytest in a subprocess from ``directory``, without this suite's PYTHONPATH, conftest or cache."""
    env = {key: value for key, value in os.environ.items() if key not in ('PYTHONPATH', 'PYTEST_ADDOPTS')}
    return subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-q', '-rs'] + list(args),
                          cwd=directory, env=env, capture_output=True, text=True, timeout=180)


def test_the_example_application_suite_passes():
    # examples/test_my_app.py runs on the plugin's fixtures alone (CI=true, inherited, makes its relay test fail
    # instead of skipping when Kamailio is missing)
    example = os.path.join(ROOT, 'examples', 'test_my_app.py')
    with tempfile.TemporaryDirectory() as directory:
        result = run_pytest_in(directory, '--rootdir', os.path.dirname(example), example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r'\b[4-9] passed', result.stdout), result.stdout


WHEEL_CHECK = '''
import os, sys
import msrplib.testing
from msrplib.testing import KamailioRelay, kamailio_available
from msrplib.testing import kamailio as module
assert msrplib.testing.__file__.startswith(sys.argv[1]), msrplib.testing.__file__
assert module.TEMPLATE.startswith(sys.argv[1]) and os.path.isfile(module.TEMPLATE), module.TEMPLATE
import msrplib.testing.pytest_plugin
relay = KamailioRelay()
try:
    assert open(relay.config_path).read().count(str(relay.port)) >= 1
    if kamailio_available():
        relay.start()
        assert relay.running
        print('kamailio started from the wheel')
finally:
    relay.close()
print('ok')
'''


def test_the_kamailio_relay_works_from_an_installed_wheel(tmp_path):
    # build the wheel as a user would (pip wheel), install it into a directory of its own and use it from
    # there with the cwd elsewhere: the routing script must come from the wheel, not the source tree
    wheels, target, elsewhere = tmp_path / 'wheels', tmp_path / 'site', tmp_path / 'elsewhere'
    elsewhere.mkdir()
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', ROOT, '-w', str(wheels)],
                   check=True, timeout=240, capture_output=True, cwd=str(elsewhere))
    [wheel] = list(wheels.glob('msrplib-*.whl'))
    import zipfile
    with zipfile.ZipFile(str(wheel)) as archive:
        names = archive.namelist()
        assert 'msrplib/testing/kamailio.cfg.in' in names
        [entry_points] = [name for name in names if name.endswith('.dist-info/entry_points.txt')]
        assert 'msrplib = msrplib.testing.pytest_plugin' in archive.read(entry_points).decode()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(target), str(wheel)],
                   check=True, timeout=120, capture_output=True, cwd=str(elsewhere))
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run([sys.executable, '-c', WHEEL_CHECK, str(target)], cwd=str(elsewhere), env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith('ok\n')
    if os.environ.get('CI') == 'true':
        assert 'kamailio started from the wheel' in result.stdout


def test_raw_peer_report_reaches_the_sender_and_expect_can_skip():
    with RawPeer() as peer:
        session = _bound_acceptor_and_peer(peer)
        try:
            chunk = session.make_message('tell me', 'text/plain')
            chunk.add_header(SuccessReportHeader('yes'))
            session.send_chunk(chunk)
            request = peer.expect(method='SEND', headers={'Success-Report': 'yes'}, respond=200)
            peer.report(request, '000 200 OK')
            with gevent.Timeout(T):
                report = session.receive_chunk()
            assert (report.method, report.message_id, report.status.code) == ('REPORT', chunk.message_id, 200)
            for text in ('one', 'two', 'three'):
                session.send_chunk(session.make_message(text, 'text/plain'))
            last = peer.expect(method='SEND', body=b'three', skip=True)     # 'one' and 'two' are dropped
            assert last.mismatches(headers={'Success-Report': 'yes'}) == [
                "header Success-Report: None does not match 'yes'"]
        finally:
            session.msrp.loseConnection(wait=False)


def test_tshark_capture_says_when_tshark_is_missing(tmp_path, monkeypatch):
    from msrplib.testing import TsharkCapture
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(RuntimeError, match='tshark is not installed'):
        TsharkCapture(str(tmp_path / 'x.pcap'), [2855]).start()


def test_raw_peer_reset_over_tls_is_a_connection_lost_too():
    with RawPeer(tls=True) as peer:
        session = _bound_acceptor_and_peer(peer)
        peer.send(body=b'half', stop_at=-10)
        gevent.sleep(0.05)
        peer.reset()
        with gevent.Timeout(T), pytest.raises(ConnectionLost):
            session.receive_chunk()


def test_raw_peer_reproduces_an_endless_header_line_in_a_few_lines():
    # the attack of test_hostile_peers' endless-line tests, against a whole session this time
    with RawPeer() as peer:
        session = _bound_acceptor_and_peer(peer)
        peer.send_raw(b'MSRP abcd1234 SEND\r\nTo-Path: msrp://')

        def flood():
            try:
                while True:
                    peer.send_raw(b'x' * 65536)
            except OSError:
                pass
        job = gevent.spawn(flood)
        peer.wait_closed()                              # the application hung up on it
        job.get(timeout=T)
        with gevent.Timeout(T), pytest.raises(LimitExceeded) as info:
            session.receive_chunk()
        assert info.value.limit in ('max_line_length', 'max_header_block')
