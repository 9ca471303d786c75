#!/usr/bin/env python3
"""File transfer benchmark: a large file through send_file -> a reassembling receiver, over loopback.

    python bench/bench_sendfile.py [--size MiB] [--chunk-size BYTES] [--quick] [--cli]

Sender and receiver run in separate processes.  Reports the transfer rate
(MB/s), the peak RSS of both processes, and the round-trip latency of chat
lines sent (deliver_message, every 20 ms) on the same session while the
transfer runs, next to the same latency on an idle session.  With --cli the
transfer is done by the `msrp sendfile` / `msrp listen` commands instead
(rate and peak RSS only).
"""

import argparse
import hashlib
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _make_file(path, size):
    block = hashlib.sha256(b'msrp').digest() * 32768  # 1 MiB
    with open(path, 'wb') as f:
        remaining = size
        while remaining > 0:
            f.write(block[:remaining])
            remaining -= len(block)


def _receiver(conn, directory):
    import gevent
    from msrplib.connect import AcceptorDirect
    from msrplib.message import MessageAssembler
    from msrplib.protocol import URI
    from msrplib.session import GreenMSRPSession

    def open_file(message):
        return open(os.path.join(directory, 'received.bin'), 'w+b')

    acceptor = AcceptorDirect()
    path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
    conn.send([str(uri) for uri in path])
    session = GreenMSRPSession(acceptor.complete(None),
                               assembler=MessageAssembler(max_message_size=1 << 40, memory_limit=1 << 20,
                                                          open_file=open_file))
    size = 0
    while True:
        message = session.receive_chunk()
        if message.content_type == 'application/octet-stream':
            size = message.size
            message.file.close()
            break
    conn.send((size, _peak_rss_mib()))
    conn.recv()
    session.shutdown()
    gevent.sleep(0)


def _chat_latency(session, count, stop=None):
    import gevent
    samples = []
    for _ in range(count):
        if stop is not None and stop():
            break
        started = time.perf_counter()
        session.deliver_message('ping while sending', 'text/plain')
        samples.append(time.perf_counter() - started)
        gevent.sleep(0.02)
    return samples


def _sender(conn, file_path, chunk_size):
    import gevent
    from msrplib.connect import ConnectorDirect
    from msrplib.protocol import URI
    from msrplib.session import GreenMSRPSession
    remote = [URI.parse(text) for text in conn.recv()]
    connector = ConnectorDirect()
    connector.prepare(URI(host='127.0.0.1', use_tls=False))
    session = GreenMSRPSession(connector.complete(remote))
    idle = _chat_latency(session, 20)
    started = time.monotonic()
    message = session.send_file(file_path, content_type='application/octet-stream', chunk_size=chunk_size)
    busy = gevent.spawn(_chat_latency, session, 100000, lambda: message.done)
    message.wait()
    elapsed = time.monotonic() - started
    busy_samples = busy.get()
    conn.send((elapsed, idle, busy_samples, _peak_rss_mib()))
    conn.recv()
    session.shutdown()


def run_library(size, chunk_size):
    """Transfer a ``size``-byte file with the library in two processes; return a dict of figures."""
    directory = tempfile.mkdtemp(prefix='msrp-bench-')
    try:
        file_path = os.path.join(directory, 'source.bin')
        _make_file(file_path, size)
        context = multiprocessing.get_context('spawn')
        sender_end, sender_conn = context.Pipe()
        receiver_end, receiver_conn = context.Pipe()
        receiver = context.Process(target=_receiver, args=(receiver_conn, directory))
        sender = context.Process(target=_sender, args=(sender_conn, file_path, chunk_size))
        receiver.start()
        sender.start()
        try:
            sender_end.send(receiver_end.recv())
            elapsed, idle, busy, sender_rss = sender_end.recv()
            received, receiver_rss = receiver_end.recv()
            sender_end.send('bye')
            receiver_end.send('bye')
        finally:
            for process in (sender, receiver):
                process.join(60)
                if process.is_alive():
                    process.kill()
        intact = received == size and _same_file(file_path, os.path.join(directory, 'received.bin'))
        return {'rate': size / elapsed / 1e6, 'elapsed': elapsed, 'sender_rss': sender_rss,
                'receiver_rss': receiver_rss, 'idle_ms': statistics.median(idle) * 1e3,
                'busy_ms': statistics.median(busy) * 1e3 if busy else float('nan'),
                'busy_max_ms': max(busy) * 1e3 if busy else float('nan'), 'busy_count': len(busy),
                'intact': intact}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _same_file(a, b):
    def digest(path):
        h = hashlib.sha1()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        return h.digest()
    return os.path.exists(b) and digest(a) == digest(b)


# python -m msrplib ..., printing its peak RSS (KiB) on stderr when it exits
_MEASURED = [sys.executable, '-c', 'import resource, runpy, sys\n'
             'sys.argv = ["msrp"] + sys.argv[1:]\n'
             'try:\n    runpy.run_module("msrplib", run_name="__main__")\n'
             'finally:\n    sys.stderr.write("maxrss %d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n']


def run_cli(size, chunk_size):
    """Transfer with `msrp sendfile` -> `msrp listen`; return (MB/s, sender peak RSS, listener peak RSS)."""
    directory = tempfile.mkdtemp(prefix='msrp-bench-cli-')
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        file_path = os.path.join(directory, 'source.bin')
        save_dir = os.path.join(directory, 'saved')
        os.mkdir(save_dir)
        _make_file(file_path, size)
        listen = subprocess.Popen(_MEASURED + ['listen',
                                   '--count', '1', '--save-dir', save_dir], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = listen.stdout.readline()
        path = line.split(':', 1)[1].strip()
        started = time.monotonic()
        send = subprocess.run(_MEASURED + ['sendfile',
                               '--to', path, '--chunk-size', str(chunk_size), '--no-progress', file_path],
                              cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
        elapsed = time.monotonic() - started
        _, listen_err = listen.communicate(timeout=60)

        def maxrss(text):
            for line in text.splitlines():
                if line.startswith('maxrss '):
                    return int(line.split()[1]) / 1024.0
            return float('nan')
        return size / elapsed / 1e6, maxrss(send.stderr), maxrss(listen_err), send.returncode
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=256, help='file size in MiB (default 256)')
    parser.add_argument('--chunk-size', type=int, default=65536)
    parser.add_argument('--quick', action='store_true', help='32 MiB')
    parser.add_argument('--cli', action='store_true', help='use the msrp command line tools')
    args = parser.parse_args(argv)
    size = (32 if args.quick else args.size) * 1024 * 1024
    if args.cli:
        rate, sender_rss, listener_rss, code = run_cli(size, args.chunk_size)
        print('msrp sendfile -> msrp listen: %d MiB in %d-byte chunks: %.0f MB/s, peak RSS sender %.0f MiB, '
              'listener %.0f MiB (exit %d)' % (size >> 20, args.chunk_size, rate, sender_rss, listener_rss, code))
        return
    result = run_library(size, args.chunk_size)
    print('send_file -> MessageAssembler: %d MiB in %d-byte chunks' % (size >> 20, args.chunk_size))
    print('  rate                 %8.0f MB/s (%.2f s, %s)' % (result['rate'], result['elapsed'],
                                                           'intact' if result['intact'] else 'CORRUPTED'))
    print('  peak RSS             sender %.0f MiB, receiver %.0f MiB' % (result['sender_rss'],
                                                                       result['receiver_rss']))
    print('  chat round trip      idle %.2f ms; during the transfer median %.2f ms, max %.2f ms (%d lines)' % (
        result['idle_ms'], result['busy_ms'], result['busy_max_ms'], result['busy_count']))


if __name__ == '__main__':
    main()
