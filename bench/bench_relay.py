"""Bulk through a local Kamailio MSRP relay, next to the same transfer on a direct connection.

    python bench/bench_relay.py [--size MiB] [--repeat N] [--chunk-size BYTES] [--json]
    python bench/bench_relay.py --websocket [--size MiB] [--count N] [--repeat N] [--json]

Starts Kamailio (msrplib.testing.KamailioRelay; its default TCP/TLS settings,
warnings-only logging) and sends SIZE MiB (default 256) as ONE message with
``send_large_message`` and its defaults, from this process to a receiver in
another process (``MessageAssembler`` into a sink that counts and discards).
Three figures: direct (no relay: 64 KiB chunks, hop-by-hop window), through
the relay over TCP and over TLS (both ends through the relay: 8 KiB chunks,
paced on the receiver's REPORTs).  Each transfer is timed by the sender,
from the call to ``message.wait()`` returning (every byte confirmed through
the relay; every 200 in directly).  The machine should be otherwise idle.

Next to MB/s it prints the CPU seconds per GiB each side spent in the timed
transfer: the sender (this process), the receiver (its process, from the
binding to the last byte: start-up excluded) and Kamailio (all its
processes, from /proc; Linux only).  Through the relay the three share the
machine's cores, so MB/s is at most cores / (sum of CPU s per byte).
``--chunk-size`` sets ``MSRPRelaySettings(chunk_size=...)`` on both ends
(default: the library's relay default, 8 KiB).

``--websocket`` (issue 22): both ends through the same relay over plain TCP
and over ws:// (RFC 7977, ``MSRPRelaySettings(ws_url=...)``), side by side:
W1 (``--count`` 100 B messages with ``deliver_message``, one by one; each
waits for the relay's hop-by-hop 200, the receiver counts them all) and the
bulk transfer above.  Four figures: chat_tcp, chat_ws (msg/s), tcp, ws (MB/s).
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MiB = 1024 * 1024


class Zeros(io.RawIOBase):
    """``size`` bytes read from one preallocated block (tell/seek(0, 2) give the size)."""

    def __init__(self, size):
        self.size = size
        self.position = 0
        self.block = os.urandom(MiB)

    def readable(self):
        return True

    def tell(self):
        return self.position

    def seek(self, offset, whence=io.SEEK_SET):
        return self.size if whence == io.SEEK_END else self.position

    def read(self, n=-1):
        n = min(n, self.size - self.position, MiB)
        self.position += n
        return self.block[:n]


class Sink:
    """A file for MessageAssembler(open_file=...) that counts and discards."""

    def __init__(self, message=None):
        self.written = 0

    def seek(self, offset, whence=io.SEEK_SET):
        return offset

    def write(self, data):
        self.written += len(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass


def _relay_settings(relay_json):
    from msrplib.relay import MSRPRelaySettings
    import ssl
    info = json.loads(relay_json)
    context = None
    if info['tls']:
        context = ssl.create_default_context(cafile=info['ca_file'])
    if info.get('ws_url'):
        return MSRPRelaySettings(info['domain'], info['username'], info['password'], ws_url=info['ws_url'],
                                 credentials=context, chunk_size=info.get('chunk_size'))
    return MSRPRelaySettings(info['domain'], info['username'], info['password'], host=info['host'],
                             port=info['port'], use_tls=info['tls'], credentials=context,
                             chunk_size=info.get('chunk_size'))


def _process_group_cpu(pid):
    """CPU seconds (user + system) of process ``pid`` and its children, from /proc; None elsewhere."""
    try:
        ticks = os.sysconf('SC_CLK_TCK')
        total = 0
        for name in os.listdir('/proc'):
            if not name.isdigit():
                continue
            try:
                with open('/proc/%s/stat' % name) as f:
                    fields = f.read().rpartition(')')[2].split()
            except OSError:
                continue
            if int(name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks
    except (OSError, ValueError):
        return None


def receiver(relay_json, mode='bulk'):
    """Child: print our full path, accept one peer, receive one message, print its size (JSON).

    ``mode`` ``chat:N``: receive N messages instead and print their count.
    """
    import gevent
    from msrplib.connect import AcceptorDirect
    from msrplib.message import MessageAssembler
    from msrplib.protocol import URI
    from msrplib.relay import AcceptorRelay
    from msrplib.session import GreenMSRPSession
    if relay_json:
        acceptor = AcceptorRelay(_relay_settings(relay_json))
        path = acceptor.prepare()
    else:
        acceptor = AcceptorDirect()
        path = acceptor.prepare(URI(host='127.0.0.1', port=0))
    print(' '.join(str(uri) for uri in path), flush=True)
    transport = acceptor.complete(None)
    session = GreenMSRPSession(transport, assembler=MessageAssembler(max_message_size=1 << 40, open_file=Sink))
    if mode.startswith('chat:'):
        count = int(mode[len('chat:'):])
        with gevent.Timeout(900):
            for _ in range(count):
                session.receive_chunk()
        print(json.dumps({'count': count}), flush=True)
        session.shutdown()
        return
    with gevent.Timeout(900):
        started = time.process_time()
        message = session.receive_chunk()
        cpu = time.process_time() - started
        gevent.sleep(0.5)  # let the last REPORT go out
    print(json.dumps({'size': message.size, 'cpu': cpu}), flush=True)
    session.shutdown()


def _relay_json(relay, tls, ws, chunk_size=None):
    if relay is None:
        return ''
    return json.dumps({'domain': relay.domain, 'username': relay.username, 'password': relay.password,
                       'host': relay.host, 'port': relay.tls_port if tls else relay.port, 'tls': tls,
                       'ca_file': relay.ca_file, 'chunk_size': chunk_size,
                       'ws_url': (relay.wss_url if tls else relay.ws_url) if ws else None})


def transfer(size, relay=None, tls=False, chunk_size=None, ws=False):
    """``(seconds, cpu)`` to send ``size`` bytes to a receiver process (through ``relay`` when given; over
    WebSocket with ``ws``).

    ``cpu``: CPU seconds of the sender, the receiver and the relay in the transfer."""
    import gevent
    from msrplib.connect import ConnectorDirect
    from msrplib.protocol import URI
    from msrplib.relay import ConnectorRelay
    from msrplib.session import GreenMSRPSession
    relay_json = _relay_json(relay, tls, ws, chunk_size)
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--receiver', relay_json],
                             stdout=subprocess.PIPE, text=True)
    try:
        path = [URI.parse(text) for text in child.stdout.readline().split()]
        connector = ConnectorRelay(_relay_settings(relay_json)) if relay_json else ConnectorDirect()
        connector.prepare(None if relay_json else URI(host='127.0.0.1'))
        session = GreenMSRPSession(connector.complete(path))
        relay_cpu = _process_group_cpu(relay.process.pid) if relay is not None else None
        with gevent.Timeout(900):
            cpu = time.process_time()
            started = time.monotonic()
            message = session.send_large_message(Zeros(size), 'application/octet-stream')
            message.wait()
            elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu
        if relay_cpu is not None:
            relay_cpu = _process_group_cpu(relay.process.pid) - relay_cpu
        result = json.loads(child.stdout.readline())
        assert result['size'] == size, result
        session.shutdown()
        return elapsed, {'sender': cpu, 'receiver': result['cpu'], 'kamailio': relay_cpu}
    finally:
        child.wait(timeout=30)


def chat(count, relay, ws=False):
    """Messages/s of ``count`` 100 B ``deliver_message`` calls, one by one, both ends through ``relay``
    (over ws:// with ``ws``, else TCP); the receiver process counts every one."""
    import gevent
    from msrplib.relay import ConnectorRelay
    from msrplib.protocol import URI
    from msrplib.session import GreenMSRPSession
    relay_json = _relay_json(relay, False, ws)
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--receiver', relay_json,
                              'chat:%d' % count], stdout=subprocess.PIPE, text=True)
    try:
        path = [URI.parse(text) for text in child.stdout.readline().split()]
        connector = ConnectorRelay(_relay_settings(relay_json))
        connector.prepare(None)
        session = GreenMSRPSession(connector.complete(path))
        message = b'x' * 100
        with gevent.Timeout(900):
            started = time.monotonic()
            for _ in range(count):
                session.deliver_message(message, 'text/plain')
            elapsed = time.monotonic() - started
        result = json.loads(child.stdout.readline())
        assert result['count'] == count, result
        session.shutdown()
        return count / elapsed
    finally:
        child.wait(timeout=30)


def run_websocket(size, count, repeat):
    """W1 and bulk through one Kamailio relay, both ends over TCP and both over ws://."""
    from msrplib.testing import KamailioRelay
    rates = {'chat_tcp': [], 'chat_ws': [], 'tcp': [], 'ws': []}
    with KamailioRelay(debug=1) as relay:
        for _ in range(repeat):
            rates['chat_tcp'].append(chat(count, relay))
            rates['chat_ws'].append(chat(count, relay, ws=True))
            rates['tcp'].append(size / transfer(size, relay, False)[0] / 1e6)
            rates['ws'].append(size / transfer(size, relay, False, ws=True)[0] / 1e6)
    result = {name: statistics.median(values) for name, values in rates.items()}
    result['runs'] = rates
    return result


def run(size, repeat, chunk_size=None):
    from msrplib.testing import KamailioRelay
    rates = {'direct': [], 'tcp': [], 'tls': []}
    cpus = {name: [] for name in rates}
    with KamailioRelay(debug=1) as relay:
        for _ in range(repeat):
            for name, args in (('direct', ()), ('tcp', (relay, False, chunk_size)), ('tls', (relay, True, chunk_size))):
                elapsed, cpu = transfer(size, *args)
                rates[name].append(size / elapsed / 1e6)
                cpus[name].append(cpu)
    result = {name: statistics.median(values) for name, values in rates.items()}
    result['runs'] = rates
    result['cpu_per_gib'] = {  # median CPU seconds per GiB of each side
        name: {side: (None if values[0][side] is None else
                      statistics.median(cpu[side] for cpu in values) * 1024 * MiB / size)
               for side in values[0]}
        for name, values in cpus.items()}
    return result


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == '--receiver':
        receiver(*sys.argv[2:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=256, help='MiB per transfer (default 256)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--chunk-size', type=int, default=None, help='relay chunk size (default: the library\'s)')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--websocket', action='store_true', help='W1 and bulk over TCP and over ws:// via the relay')
    parser.add_argument('--count', type=int, default=5000, help='--websocket: chat messages per run (default 5000)')
    options = parser.parse_args(argv)
    if options.websocket:
        result = run_websocket(options.size * MiB, options.count, options.repeat)
        if options.json:
            print(json.dumps(result))
        else:
            for name, unit in (('chat_tcp', 'msg/s'), ('chat_ws', 'msg/s'), ('tcp', 'MB/s'), ('ws', 'MB/s')):
                runs = ', '.join('%.1f' % r for r in result['runs'][name])
                print('%-8s %9.1f %s  runs %s' % (name, result[name], unit, runs))
        return 0
    result = run(options.size * MiB, options.repeat, options.chunk_size)
    if options.json:
        print(json.dumps(result))
    else:
        for name in ('direct', 'tcp', 'tls'):
            runs = ', '.join('%.1f' % r for r in result['runs'][name])
            cpu = ', '.join('%s %s' % (side, '-' if value is None else '%.1f' % value)
                            for side, value in result['cpu_per_gib'][name].items())
            print('%-6s %7.1f MB/s  runs %s  (CPU s/GiB: %s)' % (name, result[name], runs, cpu))
        print('relay/direct over TCP: %.0f %%' % (100 * result['tcp'] / result['direct']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
