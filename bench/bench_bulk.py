"""Bulk transfer benchmark: MSRPTransport against a raw socket, over loopback.

    python bench/bench_bulk.py [--quick] [--tls] [--layer transport|session] [--size MiB] [--chunk KiB]
                               [--repeat N] [--no-pin] [--profile]

Sends SIZE MiB (default 128; 16 with --quick) as CHUNK KiB (default 64) SEND
chunks of one message with ``MSRPTransport.write_chunk`` in one process and
reads them with ``MSRPTransport.read_chunk`` in another (the connection is made
and bound with ConnectorDirect / AcceptorDirect first, not timed; TCP_NODELAY
is on for both measurements, as the connect layer sets it).  The
reference moves the same number of bytes in the same pattern with plain
blocking sockets (``sendall`` of CHUNK bytes, ``recv_into`` a preallocated
buffer), TLS-wrapped too with --tls.  Each measurement is timed by the
receiver, from the first byte to the last.  Raw and MSRP runs alternate
--repeat times (default 5); each pair is printed, then the best of each, in
MB/s (10**6 bytes per second), the ratio of the bests and the median ratio
of the pairs.  Sender and receiver are pinned to one CPU each (unless
--no-pin): left to the scheduler, they sometimes share one CPU, which halves
the MSRP figure but hardly changes the raw one.  The machine should be otherwise idle: loopback throughput
varies a lot with other load.

--layer session (W3 of bench/run.py) sends the chunks with the session's
``send_chunk`` (Failure-Report yes: each chunk gets its 200) and receives them
with ``GreenMSRPSession.receive_chunk``; the receiver checks the byte count
and every Byte-Range.

--profile runs one more MSRP transfer with cProfile on both sides and prints
the top functions of each.
"""

import argparse
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# TLS material shared by both processes (self-signed, made once per run)

def make_tls_files(directory):
    from msrplib.tls import TLSCredentials
    credentials = TLSCredentials.ephemeral()
    cert, key = os.path.join(directory, 'cert.pem'), os.path.join(directory, 'key.pem')
    with open(cert, 'wb') as f:
        f.write(credentials.cert_pem)
    with open(key, 'wb') as f:
        f.write(credentials.key_pem)
    return cert, key, credentials.fingerprint


def server_ssl_context(cert, key, module=ssl):
    context = module.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_ssl_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ---------------------------------------------------------------------------
# Raw reference

def raw_receiver(args):
    listener = socket.create_server(('127.0.0.1', args.port))
    print('ready', flush=True)
    sock, _ = listener.accept()
    listener.close()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as msrplib.connect does
    if args.tls:
        sock = server_ssl_context(args.cert, args.key).wrap_socket(sock, server_side=True)
    buffer = bytearray(262144)
    view = memoryview(buffer)
    total, received, started = args.total, 0, None
    while received < total:
        n = sock.recv_into(view)
        if not n:
            raise SystemExit('raw: connection closed after %d bytes' % received)
        if started is None:
            started = time.perf_counter()
        received += n
    elapsed = time.perf_counter() - started
    sock.sendall(b'k')  # tell the sender we are done before closing
    sock.close()
    return elapsed


def raw_sender(args):
    sock = socket.create_connection(('127.0.0.1', args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.tls:
        sock = client_ssl_context().wrap_socket(sock)
    data = os.urandom(args.chunk)
    for _ in range(args.total // args.chunk):
        sock.sendall(data)
    sock.recv(1)
    sock.close()


# ---------------------------------------------------------------------------
# MSRP

def _uris(args):
    from msrplib.protocol import URI
    receiver = URI(host='127.0.0.1', port=args.port, use_tls=args.tls, session_id='benchreceiver')
    sender = URI(host='127.0.0.1', port=2855, use_tls=args.tls, session_id='benchsender')
    return receiver, sender


def _accept(args):
    # Listen as the receiver (with the benchmark's certificate for TLS) and return the bound transport.
    from msrplib.connect import AcceptorDirect, MSRPIncomingConnectTimeout
    from msrplib.tls import TLSCredentials
    MSRPIncomingConnectTimeout.seconds = 60
    receiver, sender = _uris(args)
    if args.tls:
        with open(args.cert, 'rb') as f:
            cert = f.read()
        with open(args.key, 'rb') as f:
            key = f.read()
        receiver.credentials = TLSCredentials(cert, key)
    acceptor = AcceptorDirect()
    acceptor.prepare(receiver)
    print('ready', flush=True)
    return acceptor.complete([sender])


def msrp_receiver(args):
    transport = _accept(args)
    total, received, started = args.total, 0, None
    while received < total:
        chunk = transport.read_chunk()
        if started is None:
            started = time.perf_counter()
        received += len(chunk.data)
    elapsed = time.perf_counter() - started
    transport.write(b'MSRP done0000 200 OK\r\n-------done0000$\r\n')  # "finished", then close
    transport.loseConnection()
    return elapsed


def msrp_sender(args):
    from msrplib.connect import ConnectorDirect
    from msrplib.transport import ConnectionClosed
    receiver, sender = _uris(args)
    connector = ConnectorDirect(expected_fingerprint=args.fingerprint)
    connector.prepare(sender)
    transport = connector.complete([receiver])
    data = os.urandom(args.chunk)
    total = args.total
    message_id = 'benchmessage'
    for start in range(1, total + 1, args.chunk):
        chunk = transport.make_send_request(message_id=message_id, data=data, start=start, length=total)
        transport.write_chunk(chunk)
    try:
        transport.read_chunk()
    except ConnectionClosed:
        pass
    transport.loseConnection()


def session_receiver(args):
    """W3 through the session: a GreenMSRPSession receives the chunks; checks byte count and Byte-Ranges."""
    from msrplib.session import GreenMSRPSession
    session = GreenMSRPSession(_accept(args))
    # Timed from the binding: the reader may queue many chunks before receive_chunk first returns.
    total, received, started = args.total, 0, time.perf_counter()
    while received < total:
        chunk = session.receive_chunk()
        byte_range = chunk.byte_range
        if byte_range.start != received + 1 or byte_range.total != total or \
                byte_range.end not in (None, received + len(chunk.data)):
            raise SystemExit('session: bad Byte-Range %r after %d bytes' % (byte_range, received))
        received += len(chunk.data)
    elapsed = time.perf_counter() - started
    if received != total or chunk.contflag != '$':
        raise SystemExit('session: %d bytes received, %d expected, last flag %r' % (received, total, chunk.contflag))
    session.shutdown()
    return elapsed


def session_sender(args):
    """W3 through the session: ``send_chunk`` of every chunk of one message, then wait for the close."""
    from msrplib.connect import ConnectorDirect
    from msrplib.protocol import ContentTypeHeader
    from msrplib.session import GreenMSRPSession
    from msrplib.transport import ConnectionClosed
    receiver, sender = _uris(args)
    connector = ConnectorDirect(expected_fingerprint=args.fingerprint)
    connector.prepare(sender)
    session = GreenMSRPSession(connector.complete([receiver]))
    data = os.urandom(args.chunk)
    total = args.total
    make_send_request = session.msrp.make_send_request
    content_type = ContentTypeHeader('application/octet-stream')
    failed = []

    def response_cb(response):
        if response.code != 200:
            failed.append(response)
    for start in range(1, total + 1, args.chunk):
        chunk = make_send_request(message_id='benchmessage', data=data, start=start, length=total)
        chunk.add_header(content_type)
        session.send_chunk(chunk, response_cb)
    try:
        while True:
            session.receive_chunk()  # the receiver's shutdown ends the session
    except ConnectionClosed:
        pass
    if failed:
        raise SystemExit('session: %d chunks refused, e.g. %s %s' % (len(failed), failed[0].code, failed[0].comment))


# ---------------------------------------------------------------------------
# Process management

def child_main(args):
    roles = {'raw-receiver': raw_receiver, 'raw-sender': raw_sender,
             'msrp-receiver': msrp_receiver, 'msrp-sender': msrp_sender,
             'session-receiver': session_receiver, 'session-sender': session_sender}
    function = roles[args.role]
    if args.pin and hasattr(os, 'sched_setaffinity'):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:  # sender and receiver on CPUs of their own, for both measurements
            os.sched_setaffinity(0, {cpus[0] if args.role.endswith('receiver') else cpus[1]})
    if os.environ.get('BENCH_CPU'):
        import importlib
        import resource
        for module in ('msrplib.connect', 'msrplib.session'):  # imports are not part of the figure
            importlib.import_module(module)
        before = resource.getrusage(resource.RUSAGE_SELF)
        import atexit

        def report():
            after = resource.getrusage(resource.RUSAGE_SELF)
            sys.stderr.write('%s: user %.3f s, system %.3f s, %d page faults (after imports)\n' % (
                args.role, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                after.ru_minflt - before.ru_minflt))
        atexit.register(report)
    if args.profile:
        import cProfile
        import pstats
        profile = cProfile.Profile()
        result = profile.runcall(function, args)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats('tottime').print_stats(25)
        # one write, so that the two sides' profiles do not interleave
        sys.stderr.write('\n===== profile of %s (tottime) =====\n%s' % (args.role, text.getvalue()))
    else:
        result = function(args)
    if result is not None:
        print(json.dumps({'elapsed': result}), flush=True)


def transfer(kind, options, profile=False):
    """Run one receiver and one sender process; return the receiver's elapsed seconds."""
    port = free_port()
    common = [sys.executable, os.path.abspath(__file__), '--child', '--port', str(port),
              '--total', str(options.total), '--chunk', str(options.chunk)]
    if options.tls:
        common += ['--tls', '--cert', options.cert, '--key', options.key, '--fingerprint', options.fingerprint]
    if profile:
        common.append('--profile')
    if not options.no_pin:
        common.append('--pin')
    receiver = subprocess.Popen(common + ['--role', kind + '-receiver'], stdout=subprocess.PIPE, text=True)
    try:
        if receiver.stdout.readline().strip() != 'ready':
            raise SystemExit('%s receiver did not start' % kind)
        sender = subprocess.Popen(common + ['--role', kind + '-sender'])
        output, _ = receiver.communicate(timeout=600)
        if sender.wait(timeout=60) != 0 or receiver.returncode != 0:
            raise SystemExit('%s transfer failed' % kind)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    return json.loads(output.strip().splitlines()[-1])['elapsed']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='16 MiB instead of 128 MiB')
    parser.add_argument('--tls', action='store_true', help='TLS (msrps) on both measurements')
    parser.add_argument('--size', type=int, help='MiB to send')
    parser.add_argument('--chunk', type=int, default=64, help='KiB per SEND chunk (default 64)')
    parser.add_argument('--repeat', type=int, default=5, help='runs of each measurement; the best counts')
    parser.add_argument('--profile', action='store_true', help='also profile one MSRP transfer (both sides)')
    parser.add_argument('--layer', choices=('transport', 'session'), default='transport',
                        help='MSRP side: MSRPTransport.write_chunk/read_chunk (default) or the session\'s '
                             'send_chunk/receive_chunk (W3)')
    parser.add_argument('--no-pin', action='store_true',
                        help='let the OS place sender and receiver (default: one CPU each)')
    # used by the child processes
    parser.add_argument('--pin', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--role', help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--total', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--cert', help=argparse.SUPPRESS)
    parser.add_argument('--key', help=argparse.SUPPRESS)
    parser.add_argument('--fingerprint', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)

    import tempfile
    size = args.size or (16 if args.quick else 128)
    args.chunk *= 1024
    args.total = size * 1024 * 1024 // args.chunk * args.chunk
    with tempfile.TemporaryDirectory(prefix='bench-bulk-') as directory:
        if args.tls:
            args.cert, args.key, args.fingerprint = make_tls_files(directory)
        print('bulk transfer: %d MiB as %d KiB SEND chunks over 127.0.0.1%s, best of %d'
              % (size, args.chunk // 1024, ' with TLS' if args.tls else '', args.repeat))
        # Interleaved, so that a load change on the machine hits both measurements alike.
        kind = 'session' if args.layer == 'session' else 'msrp'
        runs = [(transfer('raw', args), transfer(kind, args)) for _ in range(args.repeat)]
        for number, (raw, msrp) in enumerate(runs, 1):
            print('  run %d: raw %7.1f MB/s, msrp %7.1f MB/s, %5.1f %%'
                  % (number, args.total / raw / 1e6, args.total / msrp / 1e6, 100.0 * raw / msrp))
        raw = min(run[0] for run in runs)
        msrp = min(run[1] for run in runs)
        raw_rate = args.total / raw / 1e6
        msrp_rate = args.total / msrp / 1e6
        ratios = sorted(100.0 * run[0] / run[1] for run in runs)
        print('raw socket   %8.1f MB/s  (best, %.3f s)' % (raw_rate, raw))
        print('%-13s%8.1f MB/s  (best, %.3f s)' % ('MSRPSession' if kind == 'session' else 'MSRPTransport',
                                                     msrp_rate, msrp))
        print('ratio        %8.1f %%  (best to best; median of the runs %.1f %%)'
              % (100.0 * msrp_rate / raw_rate, ratios[len(ratios) // 2]))
        if args.profile:
            sys.stdout.flush()
            transfer(kind, args, profile=True)


if __name__ == '__main__':
    main()
