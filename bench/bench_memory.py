"""Memory: receive one 1 GiB message with ``read_chunk(size=1 MiB)`` and watch the receiver's RSS (not a test).

    python bench/bench_memory.py [--size MiB] [--segment KiB] [--json]

The sender (another process) writes ONE SEND chunk whose body is SIZE MiB
(default 1024) -- start line and headers, then the body in 1 MiB writes, then
the end-line -- so it never holds the message.  The receiver reads it with
``MSRPTransport.read_chunk(size=SEGMENT)`` (default 1 MiB), checks every
segment's Byte-Range and the byte count, and samples its own RSS after every
segment.  Reported: the receiver's RSS when the connection is bound
("start"), the peak of the samples and of the kernel's high-water mark
(VmHWM, reset at the start through /proc/self/clear_refs when allowed), and
the throughput.  Target: peak - start <= 64 MiB.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench_bulk import free_port  # noqa: E402
from bench_concurrency import rss_bytes  # noqa: E402


def hwm_bytes():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    return 0


def reset_hwm():
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def receiver(args):
    from msrplib.connect import AcceptorDirect, MSRPIncomingConnectTimeout
    from msrplib.protocol import URI
    MSRPIncomingConnectTimeout.seconds = 60
    acceptor = AcceptorDirect()
    acceptor.prepare(URI(host='127.0.0.1', port=args.port, use_tls=False, session_id='memreceiver'))
    print('ready', flush=True)
    transport = acceptor.complete([URI(host='127.0.0.1', port=2855, use_tls=False, session_id='memsender')])
    start_rss = rss_bytes()
    hwm_reset = reset_hwm()
    peak = start_rss
    total, received, segments = args.total, 0, 0
    started = time.perf_counter()
    while True:
        chunk = transport.read_chunk(size=args.segment)
        byte_range = chunk.byte_range
        if byte_range.start != received + 1 or byte_range.end != received + len(chunk.data):
            raise SystemExit('bad Byte-Range %r after %d bytes' % (byte_range, received))
        received += len(chunk.data)
        segments += 1
        del chunk
        rss = rss_bytes()
        if rss > peak:
            peak = rss
        if received >= total:
            break
    elapsed = time.perf_counter() - started
    if received != total:
        raise SystemExit('%d bytes received, %d expected' % (received, total))
    transport.write(b'MSRP done0000 200 OK\r\n-------done0000$\r\n')
    transport.loseConnection()
    return {'start_rss': start_rss, 'peak_rss': peak, 'hwm': hwm_bytes() if hwm_reset else None,
            'elapsed': elapsed, 'segments': segments, 'bytes': received}


def sender(args):
    from msrplib.connect import ConnectorDirect
    from msrplib.protocol import URI, ContentTypeHeader
    from msrplib.transport import ConnectionClosed
    connector = ConnectorDirect()
    connector.prepare(URI(host='127.0.0.1', port=2855, use_tls=False, session_id='memsender'))
    transport = connector.complete([URI(host='127.0.0.1', port=args.port, use_tls=False, session_id='memreceiver')])
    piece = os.urandom(1024 * 1024)
    total = args.total
    chunk = transport.make_send_request(message_id='bigmessage', data=b'x', start=1, end=total, length=total)
    chunk.add_header(ContentTypeHeader('application/octet-stream'))
    transport.write(chunk.encode_start())
    for _ in range(total // len(piece)):
        transport.write(piece)
    transport.write(chunk.encoded_footer)
    try:
        transport.read_chunk()
    except ConnectionClosed:
        pass
    transport.loseConnection()


def measure(size_mib=1024, segment_kib=1024):
    """Run receiver and sender processes; return the receiver's figures (a dict)."""
    port = free_port()
    common = [sys.executable, os.path.abspath(__file__), '--child', '--port', str(port),
              '--size', str(size_mib), '--segment', str(segment_kib)]
    receiving = subprocess.Popen(common + ['--role', 'receiver'], stdout=subprocess.PIPE, text=True)
    try:
        if receiving.stdout.readline().strip() != 'ready':
            raise SystemExit('memory receiver did not start')
        sending = subprocess.Popen(common + ['--role', 'sender'])
        output, _ = receiving.communicate(timeout=600)
        if sending.wait(timeout=60) != 0 or receiving.returncode != 0:
            raise SystemExit('memory transfer failed')
    finally:
        if receiving.poll() is None:
            receiving.kill()
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=1024, help='MiB in the message (default 1024)')
    parser.add_argument('--segment', type=int, default=1024, help='KiB asked of read_chunk (default 1024)')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--role', help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.total = args.size * 1024 * 1024
    args.segment *= 1024
    if args.child:
        result = (receiver if args.role == 'receiver' else sender)(args)
        if result is not None:
            print(json.dumps(result), flush=True)
        return
    result = measure(args.size, args.segment // 1024)
    if args.json:
        print(json.dumps(result))
        return
    growth = max(result['peak_rss'], result['hwm'] or 0) - result['start_rss']
    print('received %d MiB in %d segments at %.0f MB/s; receiver RSS %.1f MiB at start, peak %.1f MiB '
          '(VmHWM %s): growth %.1f MiB (target <= 64)'
          % (args.size, result['segments'], result['bytes'] / result['elapsed'] / 1e6,
             result['start_rss'] / 2**20, result['peak_rss'] / 2**20,
             '%.1f MiB' % (result['hwm'] / 2**20) if result['hwm'] else 'n/a', growth / 2**20))


if __name__ == '__main__':
    main()
