"""What a cross-CPU wake-up costs on this machine, without msrplib.

    python bench/bench_wake.py [--round-trips N] [--work N]

A gevent-socket ping-pong of 100-byte messages between two processes over
loopback, with both processes pinned to two different CPUs ("split") and to
the same CPU ("same").  Each side does some Python work before answering,
of two kinds with about the same cost on a warm CPU: a loop that touches
almost no memory ("loop", N additions) and a walk over N small dicts
("memory", a footprint like a message's objects).  Printed: round trips/s,
microseconds per round trip, and the CPU time per round trip of the client.

It separates the costs of W1 (bench/run.py): if work that touches memory
gets much dearer when the processes are split while the loop does not, the
split figure is bounded by the machine (cold caches after the wake-up),
not by the number of instructions.  This is a measurement of the machine,
not of msrplib; see doc/performance.md.
"""

import argparse
import os
import socket
import subprocess
import sys
import time


def work_function(kind, amount):
    if kind == 'memory':
        objects = [{'a': i, 'b': str(i)} for i in range(amount)]

        def work():
            total = 0
            for item in objects:
                total += item['a']
            return total
    else:
        def work():
            total = 0
            for i in range(amount):
                total += i
            return total
    return work


def server(args):
    from gevent import socket as gsocket
    work = work_function(args.kind, args.work)
    listener = gsocket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = connection.recv(65536)
        if not data:
            break
        work()
        connection.sendall(data)


def client(args):
    from gevent import socket as gsocket
    work = work_function(args.kind, args.work)
    connection = gsocket.create_connection(('127.0.0.1', args.port), timeout=30)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = b'x' * 100
    times_before, started = os.times(), time.perf_counter()
    for _ in range(args.round_trips):
        work()
        connection.sendall(message)
        received = 0
        while received < len(message):
            data = connection.recv(65536)
            if not data:
                raise SystemExit('server closed the connection')
            received += len(data)
    elapsed = time.perf_counter() - started
    times_after = os.times()
    n = args.round_trips
    print('%.0f %.1f %.1f %.1f' % (n / elapsed, elapsed / n * 1e6, (times_after.user - times_before.user) / n * 1e6,
                                   (times_after.system - times_before.system) / n * 1e6), flush=True)


def measure(args, kind, server_cpu, client_cpu, work):
    common = [sys.executable, os.path.abspath(__file__), '--kind', kind, '--work', str(work),
              '--round-trips', str(args.round_trips)]
    server_process = subprocess.Popen(common + ['--role', 'server', '--cpu', str(server_cpu)],
                                      stdout=subprocess.PIPE, text=True)
    try:
        port = server_process.stdout.readline().strip()
        output = subprocess.run(common + ['--role', 'client', '--cpu', str(client_cpu), '--port', port],
                                stdout=subprocess.PIPE, text=True, timeout=300, check=True).stdout
        server_process.wait(timeout=30)
    finally:
        if server_process.poll() is None:
            server_process.kill()
    return [float(value) for value in output.split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--round-trips', type=int, default=5000, help='round trips per measurement (default 5000)')
    parser.add_argument('--work', type=int, default=600, help='work per side per message (default 600)')
    parser.add_argument('--role', help=argparse.SUPPRESS)
    parser.add_argument('--kind', default='loop', help=argparse.SUPPRESS)
    parser.add_argument('--cpu', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        (server if args.role == 'server' else client)(args)
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit('needs two CPUs')
    print('%-7s %5s %-5s %10s %8s %12s %12s' % ('work', 'N', 'cpus', 'rt/s', 'us/rt', 'client user', 'client sys'))
    for kind, work in (('none', 0), ('loop', args.work), ('memory', args.work)):
        for placement, (a, b) in (('split', (cpus[0], cpus[1])), ('same', (cpus[0], cpus[0]))):
            rate, per_round_trip, user, system = measure(args, 'loop' if kind == 'none' else kind, a, b, work)
            print('%-7s %5d %-5s %10.0f %8.1f %9.1f us %9.1f us' % (kind, work, placement, rate, per_round_trip,
                                                                    user, system), flush=True)


if __name__ == '__main__':
    main()
