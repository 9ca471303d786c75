#!/usr/bin/env python3
"""Instructions per operation, counted by valgrind's callgrind (a script, not a test).

    python bench/bench_instructions.py [--only NAME,...] [--count N]

Wall-clock figures on a shared VM move by tens of percent from one minute to
the next; the number of user-space instructions an operation executes does
not.  Each operation runs N times (default 2,000) and 0 times under
``valgrind --tool=callgrind``; the difference divided by N is printed
(start-up, imports and warm-up cancel out).  System calls and the kernel's
work are not counted, so compare these figures between versions of the
code, not with wall-clock rates.

Operations:

make          make_send_request() of a 100 B chat message + Content-Type
make_encode   the same, then encode()
parse_send    MSRPParser().feed() of that SEND
receive_send  parse it, check its paths and headers, make the bytes of its 200
parse_reply   MSRPParser().feed() of a 200 response
w4            one chunk of W4 (bench_parser.run_small: ~400 B SEND, Byte-Range and Message-ID read)
w1_inproc     one W1 round trip (deliver_message) between two GreenMSRPSessions in one process
bulk_inproc   one 64 KiB chunk of W3 (send_chunk -> receive_chunk) in one process, per chunk
relay_inproc  one 8 KiB chunk of a send_large_message paced as through a relay (8 KiB chunks, Success-Report
              per chunk, REPORT_WINDOW, RELAY_WRITE_BYTES per write), reassembled by a MessageAssembler
              into a sink, in one process: both ends' work per chunk of the RELAY workload (no relay)

Needs valgrind (``apt-get install valgrind``).
"""

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPERATIONS = ('make', 'make_encode', 'parse_send', 'receive_send', 'parse_reply', 'w4', 'w1_inproc',
              'bulk_inproc', 'relay_inproc')


# ---------------------------------------------------------------------------
# The operations (run in the child, under valgrind)

def _transports():
    from msrplib.protocol import URI
    from msrplib.transport import MSRPTransport
    local = URI(host='127.0.0.1', port=2855, session_id='abcdefghijklmnopqrst', use_tls=False)
    remote = URI(host='127.0.0.1', port=40000, session_id='zyxwvutsrqponmlkjihg', use_tls=False)
    sender, receiver = MSRPTransport(local), MSRPTransport(remote)
    sender.set_full_remote_path([remote])
    receiver.set_full_remote_path([local])
    return sender, receiver


def _message_ops():
    from msrplib.protocol import MSRPParser, ContentTypeHeader
    try:
        from msrplib.transport import _response_bytes
    except ImportError:  # older code: the response as an MSRPData, encoded
        from msrplib.transport import make_response

        def _response_bytes(chunk, code, comment):
            return make_response(chunk, code, comment).encode()
    sender, receiver = _transports()
    content_type = ContentTypeHeader('text/plain')

    def make():
        chunk = sender.make_send_request(data=b'x' * 100)
        chunk.add_header(content_type)
        return chunk
    send = make().encode()

    def receive_send():
        chunk = MSRPParser().feed(send)[0][1]
        receiver.check_incoming_SEND_chunk(chunk)
        chunk.verify_headers()
        chunk.message_id, chunk.content_type
        return _response_bytes(chunk, 200, 'OK')
    reply = receive_send()
    return {'make': make, 'make_encode': lambda: make().encode(),
            'parse_send': lambda: MSRPParser().feed(send), 'receive_send': receive_send,
            'parse_reply': lambda: MSRPParser().feed(reply)}


def _session_pair():
    import gevent
    from msrplib.connect import AcceptorDirect, ConnectorDirect
    from msrplib.protocol import URI
    from msrplib.session import GreenMSRPSession
    acceptor = AcceptorDirect()
    passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
    connector = ConnectorDirect()
    active_path = connector.prepare(URI(host='127.0.0.1', use_tls=False))
    accepting = gevent.spawn(acceptor.complete, active_path)
    active = connector.complete(passive_path)
    return GreenMSRPSession(active), GreenMSRPSession(accepting.get())


def run_child(operation, count):
    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    if operation == 'w4':
        import bench_parser
        templates = [bench_parser.small_chunk(i) for i in range(200)]
        feeds = bench_parser.pieces(b''.join(templates[i % len(templates)] for i in range(max(count, 1))))
        if count:
            bench_parser.run_small(feeds, count)
        return
    if operation == 'w1_inproc':
        import gevent
        sender, receiver = _session_pair()

        def consume():
            while True:
                receiver.receive_chunk()
        gevent.spawn(consume)
        for _ in range(200 + count):  # 200 to warm up
            sender.deliver_message(b'x' * 100, 'text/plain')
        return
    if operation == 'bulk_inproc':
        import gevent
        from msrplib.protocol import ContentTypeHeader
        sender, receiver = _session_pair()
        size, chunks = 65536, 16 + count  # 16 to warm up
        total, data = size * chunks, os.urandom(size)
        content_type = ContentTypeHeader('application/octet-stream')

        def send():
            for start in range(1, total + 1, size):
                chunk = sender.msrp.make_send_request(message_id='bulk', data=data, start=start, length=total)
                chunk.add_header(content_type)
                sender.send_chunk(chunk, lambda response: None)
        gevent.spawn(send)
        received = 0
        while received < total:
            chunk = receiver.receive_chunk()
            assert chunk.byte_range.start == received + 1
            received += len(chunk.data)
        return
    if operation == 'relay_inproc':
        from msrplib.message import MessageAssembler

        class Sink:
            def seek(self, offset, whence=0):
                return offset

            def write(self, data):
                return len(data)

            def flush(self):
                pass

        sender, receiver = _session_pair()
        receiver.assembler = MessageAssembler(max_message_size=1 << 40, open_file=lambda message: Sink())
        size = 8192 * (64 + count)  # 64 to warm up
        message = sender.send_large_message(os.urandom(size), 'application/octet-stream', chunk_size=8192)
        # (before the writer takes it) paced as through a relay, as send_large_message does with one in the path
        message.relayed, message.window, message.report_window = True, sender.RELAY_MESSAGE_WINDOW, sender.REPORT_WINDOW
        assert receiver.receive_chunk().size == size
        message.wait()
        return
    operation_function = _message_ops()[operation]
    for _ in range(50 + count):  # 50 to warm up
        operation_function()


# ---------------------------------------------------------------------------

def instructions(operation, count):
    """User-space instructions of one child run of ``operation`` ``count`` times."""
    command = ['valgrind', '--tool=callgrind', '--callgrind-out-file=/dev/null', sys.executable,
               os.path.abspath(__file__), '--child', operation, str(count)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=1800)
    match = re.search(r'Collected : (\d+)', result.stderr)
    if result.returncode != 0 or match is None:
        raise SystemExit('%s under valgrind failed:\n%s' % (operation, result.stderr[-2000:]))
    return int(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', help='comma-separated operations (default: all)')
    parser.add_argument('--count', type=int, default=2000,
                        help='runs of each operation (default 2,000; bulk_inproc: 64 KiB chunks, at most 256; '
                             'relay_inproc: 8 KiB chunks, at most 1,024)')
    parser.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args.child[0], int(args.child[1]))
    selected = [name.strip() for name in args.only.split(',')] if args.only else list(OPERATIONS)
    unknown = [name for name in selected if name not in OPERATIONS]
    if unknown:
        parser.error('unknown operation(s): %s' % ', '.join(unknown))
    print('%-13s %14s' % ('operation', 'instructions'))
    for name in selected:
        count = min(args.count, 256) if name == 'bulk_inproc' else min(args.count, 1024) if name == 'relay_inproc' \
            else args.count
        per_operation = (instructions(name, count) - instructions(name, 0)) / count
        print('%-13s %14s' % (name, '{:,.0f}'.format(per_operation)), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
