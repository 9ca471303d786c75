"""msrplib.trafficlog.Logger: state messages on stdlib logging and the wire-traffic log."""

import logging
import subprocess
import sys

import gevent
import pytest

from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import URI, ContentTypeHeader, MSRPData, MSRPHeader
from msrplib.session import GreenMSRPSession
from msrplib.trafficlog import Logger
from msrplib.transport import Address, ConnectionLost

TIMEOUT = 5


class FakeTransport:
    def __init__(self, host=Address('TCP', '127.0.0.1', 1111), peer=Address('TCP', '10.0.0.2', 2222)):
        self.host = host
        self.peer = peer

    def getHost(self):
        return self.host

    def getPeer(self):
        return self.peer


def sample_chunk(data=b'Hi!'):
    chunk = MSRPData('a786hjs2', method='SEND', data=data)
    chunk.headers['To-Path'] = MSRPHeader('To-Path', 'msrp://bob.example.com:8888/9di4eae923wzd;tcp')
    chunk.headers['From-Path'] = MSRPHeader('From-Path', 'msrp://alicepc.example.com:7777/iau39;tcp')
    chunk.headers['Message-ID'] = MSRPHeader('Message-ID', '87652491')
    chunk.add_header(ContentTypeHeader('text/plain'))
    return chunk


def traffic_records(caplog):
    return [r for r in caplog.records if r.name == 'msrplib' and ('SENT' in r.getMessage()
                                                                  or 'RECEIVED' in r.getMessage())]


def test_traffic_is_quiet_by_default(caplog):
    caplog.set_level(logging.DEBUG, logger='msrplib')
    logger = Logger()
    logger.sent_chunk(sample_chunk(), FakeTransport())
    logger.received_chunk(sample_chunk(), FakeTransport())
    assert caplog.records == []
    assert logger.log_traffic is False
    assert logger.prefix == ''


def test_unconfigured_application_sees_no_output():
    code = ('from msrplib.trafficlog import Logger; l = Logger(log_traffic=True); l.warning("w"); l.error("e"); '
            'l.info("i")')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=TIMEOUT,
                            cwd=str(__import__('pathlib').Path(__file__).resolve().parent.parent))
    assert result.returncode == 0, result.stderr
    assert result.stderr == '' and result.stdout == ''


def test_sent_chunk_is_logged_as_on_the_wire(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    chunk = sample_chunk()
    Logger(log_traffic=True).sent_chunk(chunk, FakeTransport())
    [record] = traffic_records(caplog)
    assert record.levelno == logging.INFO
    text = record.getMessage()
    head, wire = text.split('\n', 1)
    assert head == 'SENT 127.0.0.1:1111 --> 10.0.0.2:2222'
    assert wire == chunk.encode().decode('utf-8').replace('\r\n', '\n')   # the wire's lines, ended by LF
    assert wire.startswith('MSRP a786hjs2 SEND\nTo-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\n')
    assert wire.endswith('\n\nHi!\n-------a786hjs2$\n')


def test_received_chunk_shows_direction_and_addresses(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    Logger(prefix='[alice] ', log_traffic=True).received_chunk(sample_chunk(), FakeTransport())
    [record] = traffic_records(caplog)
    assert record.getMessage().startswith('[alice] RECEIVED 127.0.0.1:1111 <-- 10.0.0.2:2222\nMSRP a786hjs2 SEND\n')


def test_raw_bytes_are_logged_as_they_are(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    Logger(log_traffic=True).sent_chunk(b'MSRP x SEND\r\n-------x$\r\n', FakeTransport())
    Logger(log_traffic=True).sent_chunk(b'\x1b[2J' + b'r' * 5000, FakeTransport())
    first, second = traffic_records(caplog)
    assert first.getMessage().endswith('\nMSRP x SEND\n-------x$\n')
    assert second.getMessage().endswith('\n\\x1b[2J' + 'r' * 1020 + '\n<3980 more bytes>\n')


# a peer's text that would drive a terminal: title, clear screen, bell, NUL, bidi override, C1 CSI, lone CR
HOSTILE = '\x1b]0;title\x07 \x1b[2J\x00\u202e\x9b31m\rover'


def _has_raw_controls(text):
    return any((ord(c) < 32 and c not in '\n\t') or 0x7f <= ord(c) <= 0x9f or c in '\u202e' for c in text)


def test_control_characters_in_headers_and_body_are_escaped(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    chunk = sample_chunk(HOSTILE.encode('utf-8'))
    chunk.headers['X-Evil'] = MSRPHeader('X-Evil', '\x1b[31mred\x07')
    Logger(log_traffic=True).received_chunk(chunk, FakeTransport())
    [record] = traffic_records(caplog)
    text = record.getMessage()
    assert not _has_raw_controls(text)
    assert 'X-Evil: \\x1b[31mred\\x07\n' in text
    assert '\\x1b]0;title\\x07 \\x1b[2J\\x00\\u202e\\x9b31m\\x0dover\n-------a786hjs2$' in text


def test_ipv6_and_unknown_addresses(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    logger = Logger(log_traffic=True)
    logger.sent_chunk(sample_chunk(), FakeTransport(host=Address('TCP', '::1', 5), peer=None))
    logger.sent_chunk(sample_chunk(), object())  # no getHost/getPeer at all
    first, second = traffic_records(caplog)
    assert first.getMessage().startswith('SENT [::1]:5 --> ?\n')
    assert second.getMessage().startswith('SENT ? --> ?\n')


def test_large_body_is_summarised(caplog):
    from msrplib.trafficlog import MAX_LOGGED_BODY
    caplog.set_level(logging.INFO, logger='msrplib')
    Logger(log_traffic=True).sent_chunk(sample_chunk(b'z' * 100000), FakeTransport())
    Logger(log_traffic=True).sent_chunk(sample_chunk(b'\x07' * MAX_LOGGED_BODY), FakeTransport())
    big, small = traffic_records(caplog)
    text = big.getMessage()
    assert len(text) < 1000 and 'zzz' not in text
    assert text.endswith('Content-Type: text/plain\n\n<100000 bytes of text/plain>\n-------a786hjs2$\n')
    assert '\\x07' * MAX_LOGGED_BODY in small.getMessage()    # up to the limit, the body itself (escaped)


def test_binary_body_does_not_break_the_log(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    Logger(log_traffic=True).received_chunk(sample_chunk(b'\xff\xfe\x00binary'), FakeTransport())
    [record] = traffic_records(caplog)
    assert '\\xff\\xfe\\x00binary' in record.getMessage()


def test_received_illegal_data_is_a_warning(caplog):
    caplog.set_level(logging.DEBUG, logger='msrplib')
    Logger(prefix='p: ').received_illegal_data(b'GET / HTTP/1.1\r\n' + b'a' * 1000, FakeTransport())
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("p: illegal data from 10.0.0.2:2222: b'GET / HTTP/1.1\\r\\n")
    assert len(message) < 300  # only the start of the data


@pytest.mark.parametrize('method, level', [('debug', logging.DEBUG), ('info', logging.INFO),
                                           ('warning', logging.WARNING), ('warn', logging.WARNING),
                                           ('error', logging.ERROR)])
def test_state_messages_with_levels_prefix_and_arguments(caplog, method, level):
    caplog.set_level(logging.DEBUG, logger='msrplib')
    getattr(Logger(prefix='[x] '), method)('%d chunks from %s', 3, 'bob')
    [record] = caplog.records
    assert (record.name, record.levelno, record.getMessage()) == ('msrplib', level, '[x] 3 chunks from bob')


def test_exception_carries_the_traceback(caplog):
    caplog.set_level(logging.DEBUG, logger='msrplib')
    try:
        raise ValueError('boom')
    except ValueError:
        Logger().exception('failed')
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info[0] is ValueError


def test_messages_below_the_level_are_dropped(caplog):
    caplog.set_level(logging.WARNING, logger='msrplib')
    logger = Logger(log_traffic=True)
    logger.debug('hidden')
    logger.info('hidden')
    logger.sent_chunk(sample_chunk(), FakeTransport())
    logger.warning('shown')
    assert [r.getMessage() for r in caplog.records] == ['shown']


def test_custom_stdlib_logger(caplog):
    caplog.set_level(logging.INFO, logger='myapp.msrp')
    logger = Logger(log_traffic=True, logger=logging.getLogger('myapp.msrp'))
    logger.info('hello')
    logger.sent_chunk(sample_chunk(), FakeTransport())
    assert [r.name for r in caplog.records] == ['myapp.msrp', 'myapp.msrp']


def make_pair(logger, use_tls=False):
    acceptor = AcceptorDirect(logger=logger)
    passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=use_tls))
    connector = ConnectorDirect(logger=logger, expected_fingerprint=acceptor.fingerprint)
    active_path = connector.prepare(URI(host='127.0.0.1', use_tls=use_tls))
    accepting = gevent.spawn(acceptor.complete, active_path)
    active = connector.complete(passive_path)
    return active, accepting.get()


@pytest.mark.parametrize('use_tls', [False, True], ids=['tcp', 'tls'])
def test_real_session_traffic_is_logged_both_ways(caplog, use_tls):
    caplog.set_level(logging.INFO, logger='msrplib')
    with gevent.Timeout(TIMEOUT):
        active, passive = make_pair(Logger(log_traffic=True), use_tls)
        a, b = GreenMSRPSession(active), GreenMSRPSession(passive)
        try:
            caplog.clear()
            chunk = a.make_message(b'over the wire', 'text/plain')
            a.deliver_chunk(chunk)
            b.receive_chunk()
        finally:
            a.shutdown()
            b.shutdown()
    local, remote = active.getHost(), active.getPeer()
    out = '%s:%s --> %s:%s' % (local.host, local.port, remote.host, remote.port)
    back = '%s:%s <-- %s:%s' % (remote.host, remote.port, local.host, local.port)
    messages = [r.getMessage() for r in traffic_records(caplog)]
    send_lines = [m for m in messages if ('MSRP %s SEND' % chunk.transaction_id) in m]
    assert [m.split('\n', 1)[0] for m in send_lines] == ['SENT ' + out, 'RECEIVED ' + back]
    assert send_lines[0].split('\n', 1)[1] == chunk.encode().decode().replace('\r\n', '\n')
    assert send_lines[1].split('\n', 1)[1] == chunk.encode().decode().replace('\r\n', '\n')
    responses = [m for m in messages if ('MSRP %s 200 OK' % chunk.transaction_id) in m]
    assert [m.split('\n', 1)[0].split(' ')[0] for m in responses] == ['SENT', 'RECEIVED']


def test_transport_reports_illegal_data(caplog):
    caplog.set_level(logging.INFO, logger='msrplib')
    with gevent.Timeout(TIMEOUT):
        active, passive = make_pair(Logger())
        b = GreenMSRPSession(passive)
        active.write(b'GET / HTTP/1.1\r\n\r\n')
        with pytest.raises(ConnectionLost):
            b.receive_chunk()
        active.loseConnection()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'illegal data from 127.0.0.1:' in warnings[0].getMessage()
    assert "b'GET / HTTP/1.1" in warnings[0].getMessage()


def test_wants_chunks_is_false_only_for_a_quiet_stock_logger():
    from msrplib.trafficlog import wants_chunks

    class Custom(Logger):
        pass
    assert not wants_chunks(Logger())
    assert wants_chunks(Logger(log_traffic=True))
    assert wants_chunks(Custom())          # a subclass may do anything with the chunks
    assert wants_chunks(object())          # any logger-like object
