#!/usr/bin/env python3
"""Session benchmarks W1 (chat) and W2 (pipelined), sender and receiver in separate processes.

    python bench/bench_session.py [--quick] [--tls] [--workload W1|W2] [--cpus same|split]

W1: 5,000 x 100-byte text/plain messages sent one after another with
    deliver_chunk (each waits for its 200): messages/s and mean round trip.
W1B: W1 sent from an asyncio loop through msrplib.bridge
    (``await AsyncSession.deliver_message``), the receiver unchanged: the
    cost of a call across the bridge.
W2: 20,000 x 100-byte messages with send_chunk and Failure-Report: no,
    counted by the receiver: messages/s from the sender's first send to the
    receiver's last chunk.
A reference is measured in the same run: a raw blocking-socket ping-pong of
100-byte messages between the same two processes (round trips/s).  The CPU
time (user, system) each side spent per message is printed too.  --cpus pins
both processes (MSRP and raw alike) to one CPU (same) or each to its own
(split); by default the OS places them, which on a 2-CPU VM is usually one
CPU for a ping-pong.
"""

import argparse
import multiprocessing
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

MESSAGE = b'x' * 100


def _cpu_seconds():
    # (user, system) CPU seconds of this process so far
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _cpu_since(before):
    after = _cpu_seconds()
    return after[0] - before[0], after[1] - before[1]


def _profiled(role, function):
    # BENCH_PROFILE=sender|receiver writes a cProfile of that side to /tmp/bench_session_<role>.prof
    if os.environ.get('BENCH_PROFILE') != role:
        return function()
    import cProfile
    profile = cProfile.Profile()
    try:
        return profile.runcall(function)
    finally:
        profile.dump_stats('/tmp/bench_session_%s.prof' % role)


def _place(placement, role):
    # Pin this process: 'same' puts both sides on the first CPU, 'split' each on a CPU of its own.
    if placement and hasattr(os, 'sched_setaffinity'):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[0] if placement == 'same' or role == 'receiver' else cpus[-1]})


def _receiver(conn, workload, count, use_tls, placement=None):
    _place(placement, 'receiver')
    import gevent
    from msrplib.connect import AcceptorDirect
    from msrplib.protocol import URI
    from msrplib.session import GreenMSRPSession
    acceptor = AcceptorDirect()
    path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=use_tls))
    conn.send(([str(uri) for uri in path], acceptor.fingerprint))
    remote = [URI.parse(text) for text in conn.recv()]
    session = GreenMSRPSession(acceptor.complete(remote))
    cpu = _cpu_seconds()

    def receive_all():
        for _ in range(count):
            session.receive_chunk()
    _profiled('receiver', receive_all)
    conn.send((time.monotonic(), _cpu_since(cpu)))
    conn.recv()
    session.shutdown()
    gevent.sleep(0)


def _sender(conn, workload, count, use_tls, placement=None):
    _place(placement, 'sender')
    from msrplib.connect import ConnectorDirect
    from msrplib.protocol import URI, FailureReportHeader
    from msrplib.session import GreenMSRPSession
    remote_text, fingerprint = conn.recv()
    remote = [URI.parse(text) for text in remote_text]
    connector = ConnectorDirect(expected_fingerprint=fingerprint)
    path = connector.prepare(URI(host='127.0.0.1', use_tls=use_tls))
    conn.send([str(uri) for uri in path])
    session = GreenMSRPSession(connector.complete(remote))

    def send_all():
        if workload == 'W1':
            for _ in range(count):
                session.deliver_message(MESSAGE, 'text/plain')
        else:
            for _ in range(count):
                chunk = session.make_message(MESSAGE, 'text/plain')
                chunk.add_header(FailureReportHeader('no'))
                session.send_chunk(chunk)
            session.shutdown()  # writes what is queued (counted: it is part of sending them)
    started = time.monotonic()
    cpu = _cpu_seconds()
    _profiled('sender', send_all)
    cpu = _cpu_since(cpu)
    session.shutdown()  # (W2: already done) the pipe below blocks the whole process
    conn.send((started, cpu))
    conn.recv()


def _bridge_sender(conn, workload, count, use_tls, placement=None):
    # W1B: W1's messages sent from an asyncio loop through msrplib.bridge (AsyncSession.deliver_message):
    # each call crosses to the bridge's hub thread and its outcome comes back to the loop.
    _place(placement, 'sender')
    import asyncio
    from msrplib.bridge import AsyncConnector
    from msrplib.protocol import URI
    if use_tls:
        raise ValueError('W1B runs over plain TCP only')
    remote = [URI.parse(text) for text in conn.recv()[0]]

    async def main():
        connector = AsyncConnector()
        path = await connector.prepare(URI(host='127.0.0.1', use_tls=False))
        conn.send([str(uri) for uri in path])
        session = await connector.complete(remote)
        started = time.monotonic()
        cpu = _cpu_seconds()        # (the whole process: the loop's thread and the hub thread)
        for _ in range(count):
            await session.deliver_message(MESSAGE, 'text/plain')
        cpu = _cpu_since(cpu)
        await session.shutdown()
        return started, cpu
    started, cpu = asyncio.run(main())
    conn.send((started, cpu))
    conn.recv()


def run_pair(workload, count, use_tls=False, cpu=None, placement=None):
    """Run one session workload in two processes; returns (messages/s, mean seconds per message).

    ``cpu``, a dict if given, receives the CPU seconds per message of each side as
    ``cpu['sender']`` and ``cpu['receiver']``: (user, system) pairs.  ``placement``:
    None lets the OS place the two processes, ``'same'`` pins both to one CPU,
    ``'split'`` each to a CPU of its own.  ``workload`` 'W1B' is W1 sent from
    asyncio through :mod:`msrplib.bridge` (the receiver is W1's).
    """
    context = multiprocessing.get_context('spawn')
    sender_end, sender_conn = context.Pipe()
    receiver_end, receiver_conn = context.Pipe()
    receiver = context.Process(target=_receiver, args=(receiver_conn, workload, count, use_tls, placement))
    sender = context.Process(target=_bridge_sender if workload == 'W1B' else _sender,
                             args=(sender_conn, workload, count, use_tls, placement))
    receiver.start()
    sender.start()
    try:
        sender_end.send(receiver_end.recv())       # acceptor's path -> connector
        receiver_end.send(sender_end.recv())       # connector's path -> acceptor
        started, sender_cpu = sender_end.recv()
        finished, receiver_cpu = receiver_end.recv()
        sender_end.send('bye')
        receiver_end.send('bye')
    finally:
        sender.join(30)
        receiver.join(30)
        for process in (sender, receiver):
            if process.is_alive():
                process.kill()
    elapsed = finished - started
    if cpu is not None:
        cpu['sender'] = (sender_cpu[0] / count, sender_cpu[1] / count)
        cpu['receiver'] = (receiver_cpu[0] / count, receiver_cpu[1] / count)
    return count / elapsed, elapsed / count


def _echo_server(listener, count, placement=None):
    _place(placement, 'receiver')
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(count):
        data = b''
        while len(data) < len(MESSAGE):
            data += conn.recv(4096)
        conn.sendall(data)
    conn.close()


def raw_ping_pong(count, placement=None):
    """Round trips/s of 100-byte messages over a raw blocking socket between two processes.

    ``placement`` as for :func:`run_pair`.
    """
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    context = multiprocessing.get_context('fork')
    server = context.Process(target=_echo_server, args=(listener, count, placement))
    server.start()
    affinity = os.sched_getaffinity(0) if placement and hasattr(os, 'sched_getaffinity') else None
    _place(placement, 'sender')
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.monotonic()
    for _ in range(count):
        client.sendall(MESSAGE)
        data = b''
        while len(data) < len(MESSAGE):
            data += client.recv(4096)
    elapsed = time.monotonic() - started
    if affinity is not None:
        os.sched_setaffinity(0, affinity)
    client.close()
    server.join(10)
    listener.close()
    return count / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='a tenth of the messages')
    parser.add_argument('--tls', action='store_true', help='use msrps')
    parser.add_argument('--workload', choices=['W1', 'W2'], action='append')
    parser.add_argument('--cpus', choices=['same', 'split'],
                        help='pin both processes to one CPU, or each to its own (default: the OS places them)')
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    workloads = args.workload or ['W1', 'W2']
    print('%-4s %-34s %12s %s' % ('', 'workload', 'figure', 'unit'))
    if 'W1' in workloads:
        count = 5000 // scale
        cpu = {}
        rate, mean = run_pair('W1', count, args.tls, cpu, args.cpus)
        reference = raw_ping_pong(count, args.cpus)
        print('W1   chat, deliver_chunk one by one    %12.0f msg/s  (mean round trip %.1f us; raw ping-pong '
              '%.0f/s, ratio %.2f)' % (rate, mean * 1e6, reference, rate / reference))
        print('     CPU per message: sender %.1f us user + %.1f us system, receiver %.1f + %.1f'
              % tuple(1e6 * value for value in cpu['sender'] + cpu['receiver']))
    if 'W2' in workloads:
        count = 20000 // scale
        cpu = {}
        rate, _ = run_pair('W2', count, args.tls, cpu, args.cpus)
        print('W2   pipelined, send_chunk, FR no      %12.0f msg/s' % rate)
        print('     CPU per message: sender %.1f us user + %.1f us system, receiver %.1f + %.1f'
              % tuple(1e6 * value for value in cpu['sender'] + cpu['receiver']))


if __name__ == '__main__':
    main()
