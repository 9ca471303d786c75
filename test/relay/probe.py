#!/usr/bin/env python3
"""Probe a real Kamailio MSRP relay with hand-written MSRP over raw sockets.

Not a test module (no test_ prefix): run it by hand to see every byte that
goes over the wire, e.g.::

    python3 test/relay/probe.py                 # all scenarios
    python3 test/relay/probe.py tcp tls         # only some
    python3 test/relay/probe.py --list

It uses only the socket/ssl modules, rawmsrp.py (hand-built frames) and
msrplib.digest.  What it showed is written up in NOTES.md.
"""

import os
import socket
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from msrplib.testing.kamailio import KamailioRelay, kamailio_available  # noqa: E402
from rawmsrp import RawClient, build_response, new_id, build_frame  # noqa: E402
from msrplib import digest  # noqa: E402


def section(title):
    print('\n' + '=' * 78 + '\n== ' + title + '\n' + '=' * 78, flush=True)


def note(text):
    print('>>> ' + text, flush=True)


def check(cond, text):
    if not cond:
        raise AssertionError(text)
    note('OK: ' + text)


def connect(relay, name, tls=False):
    if tls:
        return RawClient(name, relay.host, relay.tls_port, use_tls=True,
                         ssl_context=relay.client_ssl_context())
    return RawClient(name, relay.host, relay.port)


def relay_uri(relay, tls=False):
    return relay.tls_uri if tls else relay.uri


def login(relay, name, tls=False, expires=None):
    client = connect(relay, name, tls)
    first, second = client.authenticate(relay_uri(relay, tls), relay.username,
                                        relay.password, expires=expires,
                                        digest=digest)
    check(first.code == 401, '%s: first AUTH answered 401' % name)
    check(second is not None and second.code == 200,
          '%s: AUTH with Authorization answered 200' % name)
    note('%s Use-Path=%s Expires=%s' % (name, client.use_path, client.expires))
    return client


def exchange(a, b, label='Hello B'):
    """A sends to B through the relay(s); B answers 200 and a REPORT."""
    to_path = a.use_path + b.use_path + [b.uri]
    tid, mid = a.send_message(to_path, label.encode())
    resp = a.recv_frame()
    check(resp.code == 200 and resp.tid == tid,
          'A got the hop-by-hop 200 for its SEND from the relay')
    check(resp.path('To-Path') == [a.uri] and
          resp.path('From-Path') == a.use_path[:1],
          'the 200 has To-Path = A URI, From-Path = A relay session URI')
    req = b.recv_frame()
    check(req.method == 'SEND' and req.body == label.encode(),
          'B received the SEND with its body intact')
    check(req.tid == tid, 'the relay kept the transaction id')
    check(req.path('To-Path') == [b.uri], 'B sees To-Path = [B URI]')
    check(req.path('From-Path') == b.use_path + a.use_path + [a.uri],
          'B sees From-Path = B relay URI, A relay URI, A URI')
    b.send(build_response(req, 200))
    b.send_report(req)
    report = a.recv_frame()
    check(report.method == 'REPORT' and report.header('Message-ID') == mid,
          'A received the REPORT through the relay')
    check(report.path('To-Path') == [a.uri] and
          report.path('From-Path') == a.use_path + b.use_path + [b.uri],
          'REPORT From-Path = A relay URI, B relay URI, B URI')
    return req


# -- scenarios ----------------------------------------------------------------

def scenario_tcp(relay):
    section('two clients over plain TCP, one relay: AUTH, SEND, 200, REPORT')
    a = login(relay, 'A')
    b = login(relay, 'B')
    exchange(a, b)
    note('B -> A as well')
    exchange(b, a, 'Hello A')
    a.close(), b.close()


def scenario_tls(relay):
    section('two clients over TLS (msrps), one relay')
    a = login(relay, 'A', tls=True)
    b = login(relay, 'B', tls=True)
    check(a.use_path[0].startswith('msrps://127.0.0.1:%d/' % relay.tls_port),
          'TLS Use-Path is msrps://<host>:<tls_port>/<id>;tcp')
    exchange(a, b)
    a.close(), b.close()


def scenario_mixed(relay):
    section('client A on TCP, client B on TLS, one relay')
    a = login(relay, 'A')
    b = login(relay, 'B', tls=True)
    exchange(a, b)
    exchange(b, a, 'Hello A')
    a.close(), b.close()


def scenario_two_relays(relay):
    section('A at relay 1, B at relay 2 (relay 1 connects to relay 2 itself)')
    with KamailioRelay() as relay2:
        a = login(relay, 'A')
        b = login(relay2, 'B')
        exchange(a, b)
        exchange(b, a, 'Hello A')
        a.close(), b.close()


def scenario_one_relay(relay):
    section('A behind the relay, B without a relay listening on its own URI')
    a = login(relay, 'A')
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    listener.settimeout(5)
    b_uri = 'msrp://127.0.0.1:%d/%s;tcp' % (listener.getsockname()[1],
                                             new_id(10))
    tid, mid = a.send_message(a.use_path + [b_uri], b'Hello direct B')
    resp = a.recv_frame()
    note('A got %s %s for its SEND' % (resp.code, resp.comment))
    try:
        echo = a.recv_frame(timeout=1)
        note('A got its own SEND back: %r' % echo)
        a.send(build_response(echo, 200))
    except socket.timeout:
        pass
    conn, peer = listener.accept()
    note('the relay connected to B from %s:%d' % peer)
    b = RawClient.__new__(RawClient)
    b.name, b.timeout, b.log, b.sock, b.buf = 'B', 5.0, print, conn, b''
    b.uri, b.use_path = b_uri, []
    conn.settimeout(5)
    req = b.recv_frame()
    check(req.path('From-Path') == a.use_path + [a.uri],
          'B sees From-Path = A relay URI, A URI')
    b.send(build_response(req, 200))
    b.send_report(req)
    report = a.recv_frame()
    check(report.method == 'REPORT', 'A got B\'s REPORT sent back on the '
          'connection the relay opened')
    tid, _ = b.send_message(a.use_path + [a.uri], b'Hello A, from B')
    note('B got %r for its SEND on that connection' % b.recv_frame())
    req = a.recv_frame()
    check(req.method == 'SEND' and req.body == b'Hello A, from B',
          'A got B\'s SEND')
    a.send(build_response(req, 200))
    a.close(), conn.close(), listener.close()


def scenario_auth_failures(relay):
    section('wrong password, unknown user, Expires without credentials')
    c = connect(relay, 'C')
    _, ch = c.auth(relay.uri)
    challenge = digest.parse_challenge(ch.header('WWW-Authenticate'))
    authz = digest.make_authorization(challenge, relay.username, 'wrong',
                                      'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    note('wrong password -> %s %s' % (resp.code, resp.comment))
    authz = digest.make_authorization(challenge, 'mallory', relay.password,
                                      'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    note('unknown user with the right password -> %s %s'
         % (resp.code, resp.comment))
    authz = digest.make_authorization(challenge, 'mallory', 'wrong',
                                      'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    note('unknown user, wrong password -> %s %s' % (resp.code, resp.comment))
    _, resp = c.auth(relay.uri, [('Expires', '5')])
    note('no credentials, Expires: 5 -> %s %s' % (resp.code, resp.comment))
    authz = digest.make_authorization(challenge, relay.username,
                                      relay.password, 'AUTH',
                                      'msrp://somewhere.else:1;tcp')
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    note('digest uri different from the To-Path URI -> %s %s'
         % (resp.code, resp.comment))
    authz = digest.make_authorization(challenge, relay.username,
                                      relay.password, 'AUTH', relay.uri)
    _, resp = c.auth('msrp://localhost:%d;tcp' % relay.port,
                     [('Authorization', authz)])
    note('To-Path msrp://localhost:PORT;tcp (not the listen IP) -> %s %s'
         % (resp.code, resp.comment))
    bogus = dict(challenge, nonce='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')
    authz = digest.make_authorization(bogus, relay.username, relay.password,
                                      'AUTH', relay.uri)
    _, resp = c.auth(relay.uri, [('Authorization', authz)])
    note('forged nonce -> %s %s' % (resp.code, resp.comment))
    c.close()


def scenario_expires(relay):
    section('Expires range (min %d, max %d)' % (relay.min_expires,
                                                relay.max_expires))
    for value in (relay.min_expires - 1, relay.max_expires + 1,
                  relay.min_expires, relay.max_expires, 120, None, 'abc'):
        c = connect(relay, 'E')
        _, ch = c.auth(relay.uri)
        challenge = digest.parse_challenge(ch.header('WWW-Authenticate'))
        authz = digest.make_authorization(challenge, relay.username,
                                          relay.password, 'AUTH', relay.uri)
        extra = [('Authorization', authz)]
        if value is not None:
            extra.append(('Expires', str(value)))
        _, resp = c.auth(relay.uri, extra)
        note('Expires: %s -> %s %s; Expires=%s Min-Expires=%s Max-Expires=%s'
             % (value, resp.code, resp.comment, resp.header('Expires'),
                resp.header('Min-Expires'), resp.header('Max-Expires')))
        c.close()


def scenario_refresh(relay):
    section('refreshing a reservation on the same connection')
    a = login(relay, 'A')
    first_use_path = a.use_path
    ch = None
    # reuse the same nonce with nc=2, no new 401
    _, ch = a.auth(relay.uri)
    challenge = digest.parse_challenge(ch.header('WWW-Authenticate'))
    authz = digest.make_authorization(challenge, relay.username,
                                      relay.password, 'AUTH', relay.uri, nc=1)
    _, resp = a.auth(relay.uri, [('Authorization', authz), ('Expires', '300')])
    note('refresh -> %s, Use-Path %s (first was %s)'
         % (resp.code, resp.path('Use-Path'), first_use_path))
    authz2 = digest.make_authorization(challenge, relay.username,
                                       relay.password, 'AUTH', relay.uri,
                                       nc=2)
    _, resp = a.auth(relay.uri, [('Authorization', authz2)])
    note('same nonce again with nc=2, no new challenge -> %s %s, Use-Path %s'
         % (resp.code, resp.comment, resp.path('Use-Path')))
    _, resp = a.auth(relay.uri, [('Authorization', authz2)])
    note('exact replay of the same Authorization (nc=2 again) -> %s %s'
         % (resp.code, resp.comment))
    b = login(relay, 'B')
    note('is the first session id still routable after the refresh?')
    a.use_path = first_use_path
    exchange(b, a, 'to the old session of A')
    a.close(), b.close()


def scenario_errors(relay):
    section('unknown session, unknown method, SEND before AUTH')
    a = login(relay, 'A')
    tid, _ = a.send_message(a.use_path + ['msrp://127.0.0.1:%d/nosuch;tcp'
                                          % relay.port,
                                          'msrp://127.0.0.1:9/x;tcp'], b'x')
    resp = a.recv_frame()
    note('SEND via A session to unknown relay session id -> %s %s'
         % (resp.code, resp.comment))
    try:
        extra = a.recv_frame(timeout=1)
        note('... and then %r' % extra)
    except socket.timeout:
        note('... and nothing else within 1 s')
    tid, _ = a.send_message(['msrp://127.0.0.1:%d/nosuch;tcp' % relay.port,
                             'msrp://127.0.0.1:9/x;tcp'], b'x')
    resp = a.recv_frame()
    note('SEND with To-Path = [unknown relay session, peer] (1 next hop) '
         '-> %s %s' % (resp.code, resp.comment))
    tid = new_id()
    a.send(build_frame(tid, 'NICKNAME', [
        ('To-Path', a.use_path[0]), ('From-Path', a.uri),
        ('Use-Nickname', '"bob"')]))
    resp = a.recv_frame()
    note('unknown method NICKNAME -> %s %s' % (resp.code, resp.comment))
    a.close()
    c = connect(relay, 'C')
    tid, _ = c.send_message([a.use_path[0], 'msrp://127.0.0.1:9/x;tcp'], b'x')
    resp = c.recv_frame()
    note('SEND from an unauthenticated connection to an existing session '
         'id -> %s %s' % (resp.code, resp.comment))
    c.close()


def _one_size(relay, a, b, size):
    body = (b'0123456789abcdef' * (size // 16 + 1))[:size]
    a_log, b_log = a.log, b.log
    a.log = b.log = None                # do not print 64 KiB bodies
    try:
        tid, _ = a.send_message(a.use_path + b.use_path + [b.uri], body)
        frame_len = len(build_frame(tid, 'SEND', [
            ('To-Path', ' '.join(a.use_path + b.use_path + [b.uri])),
            ('From-Path', a.uri), ('Message-ID', 'x' * 16),
            ('Success-Report', 'yes'), ('Failure-Report', 'yes'),
            ('Byte-Range', '1-%d/%d' % (size, size))], body))
        try:
            resp = a.recv_frame(timeout=3)
            a_got = '%s %s' % (resp.code, resp.comment)
        except socket.timeout:
            a_got = 'nothing'
        except ConnectionError:
            a_got = 'CONNECTION CLOSED'
        try:
            req = b.recv_frame(timeout=2)
            b.send(build_response(req, 200))
            b_got = 'SEND, body %s' % ('intact' if req.body == body
                                       else 'CHANGED')
        except socket.timeout:
            b_got = 'nothing'
        note('body %6d bytes (frame %6d bytes as sent by A): A got %s; '
             'B got %s' % (size, frame_len, a_got, b_got))
        return a_got
    finally:
        a.log, b.log = a_log, b_log


def scenario_sizes(relay):
    section('chunk sizes through the relay')
    sizes = [2048, 4096, 10240, 10600, 10700, 10800, 10900, 11000, 14000,
             15500, 16000, 16384, 65536]
    a = b = None
    for size in sizes:
        if a is None:
            a = login(relay, 'A')
            b = login(relay, 'B')
        if _one_size(relay, a, b, size) == 'CONNECTION CLOSED':
            a.close(), b.close()
            a = None
    if a is not None:
        a.close(), b.close()


def scenario_chunks(relay):
    section('one message in three chunks (+ + $), with Failure-Report: no')
    a = login(relay, 'A')
    b = login(relay, 'B')
    mid = new_id()
    to_path = ' '.join(a.use_path + b.use_path + [b.uri])
    pieces = [b'first-', b'second-', b'third']
    start = 1
    for i, piece in enumerate(pieces):
        tid = new_id()
        end = start + len(piece) - 1
        flag = '$' if i == len(pieces) - 1 else '+'
        a.send(build_frame(tid, 'SEND', [
            ('To-Path', to_path), ('From-Path', a.uri), ('Message-ID', mid),
            ('Byte-Range', '%d-%d/%d' % (start, end, 18)),
            ('Failure-Report', 'no')], piece, flag=flag))
        start = end + 1
    for _ in pieces:
        try:
            resp = a.recv_frame(timeout=2)
            note('A got %s %s for %s' % (resp.code, resp.comment, resp.tid))
        except socket.timeout:
            note('A got no response (Failure-Report: no)')
            break
    for _ in pieces:
        req = b.recv_frame()
        note('B got chunk flag %s Byte-Range %s' % (req.flag,
                                                     req.header('Byte-Range')))
    a.close(), b.close()


def scenario_peer_dies(relay):
    section('peer B disconnects, then A sends to B')
    a = login(relay, 'A')
    b = login(relay, 'B')
    b.close()
    time.sleep(0.5)
    tid, _ = a.send_message(a.use_path + b.use_path + [b.uri], b'anyone?')
    try:
        resp = a.recv_frame(timeout=3)
        note('A got %s %s' % (resp.code, resp.comment))
    except socket.timeout:
        note('A got no response')
    try:
        extra = a.recv_frame(timeout=2)
        note('... and then %r %s' % (extra, extra.header('Status')))
    except socket.timeout:
        note('... and nothing else within 2 s (no failure REPORT)')
    a.close()


def scenario_expiry(relay_unused):
    section('reservation expiry (relay with min_expires=1, timer 5 s)')
    with KamailioRelay(min_expires=1, max_expires=30) as relay:
        a = login(relay, 'A', expires=30)
        b = login(relay, 'B', expires=2)
        note('waiting 8 s for B\'s 2 s reservation to be cleaned')
        time.sleep(8)
        tid, _ = a.send_message(a.use_path + b.use_path + [b.uri], b'late')
        resp = a.recv_frame()
        note('SEND via A session to B\'s expired session -> %s %s '
             '(the 481 of the second hop is not propagated)'
             % (resp.code, resp.comment))
        tid, _ = a.send_message(b.use_path + [b.uri], b'late')
        resp = a.recv_frame()
        note('SEND straight to B\'s expired session -> %s %s'
             % (resp.code, resp.comment))
        try:
            req = b.recv_frame(timeout=2)
            note('B still got %r' % req)
        except socket.timeout:
            note('B got nothing')
        a.close(), b.close()


def scenario_kill(relay_unused):
    section('relay killed with SIGKILL mid-session')
    relay = KamailioRelay()
    relay.start()
    try:
        a = login(relay, 'A')
        b = login(relay, 'B', tls=True)
        relay.kill()
        note('TCP client sees close: %s' % a.expect_closed(3))
        note('TLS client sees close: %s' % b.expect_closed(3))
        try:
            a.send(b'MSRP x SEND\r\n')
            a.send(b'x' * 100)
            note('sending after the kill did not raise')
        except OSError as exc:
            note('sending after the kill raised %r' % exc)
        a.close(), b.close()
    finally:
        relay.close()


def scenario_cmap(relay_unused):
    section('stock msrp_cmap_save()/msrp_cmap_lookup() routing (routing="cmap")')
    with KamailioRelay(routing='cmap') as relay:
        a = login(relay, 'A')
        b = login(relay, 'B', tls=True)
        exchange(a, b)
        for value in ('120', '3600', '10'):
            c = connect(relay, 'C')
            _, ch = c.auth(relay.uri)
            challenge = digest.parse_challenge(ch.header('WWW-Authenticate'))
            authz = digest.make_authorization(challenge, relay.username,
                                              relay.password, 'AUTH',
                                              relay.uri)
            c.send(build_frame(new_id(), 'AUTH', [
                ('To-Path', relay.uri), ('From-Path', c.uri),
                ('Authorization', authz), ('Expires', value)]))
            c.sock.settimeout(2)
            try:
                data = c.sock.recv(65536)
                note('cmap, Expires: %s -> raw reply %r' % (value, data))
            except socket.timeout:
                note('cmap, Expires: %s -> no reply within 2 s' % value)
            c.close()
        a.close(), b.close()


SCENARIOS = {
    'tcp': scenario_tcp, 'tls': scenario_tls, 'mixed': scenario_mixed,
    'tworelays': scenario_two_relays, 'onerelay': scenario_one_relay, 'authfail': scenario_auth_failures,
    'expires': scenario_expires, 'refresh': scenario_refresh,
    'errors': scenario_errors, 'sizes': scenario_sizes,
    'chunks': scenario_chunks, 'peerdies': scenario_peer_dies,
    'expiry': scenario_expiry, 'kill': scenario_kill, 'cmap': scenario_cmap,
}
ESSENTIAL = ('tcp', 'tls')


def main(argv):
    if '--list' in argv:
        print(' '.join(SCENARIOS))
        return 0
    if not kamailio_available():
        print('kamailio with the msrp module is not installed; '
              'run test/relay/install.sh')
        return 2
    names = [a for a in argv if not a.startswith('-')] or list(SCENARIOS)
    failed = []
    with KamailioRelay() as relay:
        section('relay %r: msrp %s, msrps %s, realm %s, user %s/%s, log %s'
                % (relay, relay.uri, relay.tls_uri, relay.realm,
                   relay.username, relay.password, relay.log_path))
        for name in names:
            try:
                SCENARIOS[name](relay)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                print('---- relay log tail ----\n' + relay.log_tail(30))
        if '-v' in argv:
            section('relay log')
            print(relay.log_text())
    section('done; failed scenarios: %s' % (failed or 'none'))
    return 1 if any(n in failed for n in ESSENTIAL) or failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
