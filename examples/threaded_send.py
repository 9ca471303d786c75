#!/usr/bin/env python3
"""Chat with ``msrp listen`` and send it a 10 MiB file from a plain threaded script (msrplib.bridge).

    msrp listen --reply 'Hello from the listener'     # prints  path: msrp://127.0.0.1:PORT/SESSION;tcp
    python examples/threaded_send.py 'msrp://127.0.0.1:PORT/SESSION;tcp'

No gevent here: every call blocks only the calling thread (msrplib runs its
gevent hub in a thread of its own), and incoming messages are printed by a
callback on a worker thread.  Sends two chat lines and a 10 MiB file (with
progress), each asking for the listener's Success-Report, and exits 0 once
the listener has confirmed all three, 1 otherwise.
"""

import hashlib
import os
import sys
import tempfile
import threading

from msrplib.bridge import ThreadedConnector
from msrplib.protocol import URI
from msrplib.transport import MSRPTransactionError

LINES = ['Hello from a thread', 'Here comes a file']
FILE_SIZE = 10 * 1024 * 1024
TIMEOUT = 60    # seconds: the bound of every wait
_printing = threading.Lock()


def say(text, file=sys.stdout):
    """Print one line whole (callbacks print from other threads)."""
    with _printing:
        file.write(text + '\n')
        file.flush()


def make_file(directory):
    """A 10 MiB file of random bytes; returns (its path, its sha256)."""
    path = os.path.join(directory, 'threaded-example.bin')
    digest = hashlib.sha256()
    with open(path, 'wb') as f:
        for _ in range(FILE_SIZE // 65536):
            block = os.urandom(65536)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


class Progress:
    """Prints every tenth of a message acknowledged (called on the executor's threads)."""

    def __init__(self):
        self.shown = -1
        self.lock = threading.Lock()

    def __call__(self, message):
        tenth = 10 * message.bytes_acknowledged // message.size
        with self.lock:
            if tenth <= self.shown:
                return
            self.shown = tenth
        say('file: %d%% (%d of %d bytes)' % (10 * tenth, message.bytes_acknowledged, message.size), sys.stderr)


def main(listener_path):
    remote_path = URI.parse_path(listener_path)
    connector = ThreadedConnector()
    connector.prepare(URI(host=remote_path[-1].host, use_tls=False), timeout=TIMEOUT)
    try:
        session = connector.complete(remote_path, timeout=TIMEOUT)
    except BaseException:
        connector.cleanup(timeout=TIMEOUT)
        raise
    ended = threading.Event()

    def incoming(chunk, error=None):     # on a worker thread, one chunk at a time, in order
        if chunk is None:
            ended.set()                  # the session ended (error says why)
        elif chunk.method == 'SEND' and chunk.data:
            say('listener says: ' + chunk.data.decode('utf-8', 'replace'))
    session.on_incoming(incoming)
    try:
        for line in LINES:
            session.send_large_message(line, 'text/plain', success_report=True).wait(TIMEOUT)
            say('confirmed: ' + line)
        with tempfile.TemporaryDirectory() as directory:
            path, sha256 = make_file(directory)
            message = session.send_file(path, success_report=True, progress_cb=Progress(), timeout=TIMEOUT)
            message.wait(TIMEOUT)       # the listener checked the file's hash and saved it
        say('confirmed: file of %d bytes, sha256 %s' % (FILE_SIZE, sha256))
    finally:
        session.shutdown(timeout=TIMEOUT)
        ended.wait(TIMEOUT)             # what the listener said before the end is printed


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1])
    except MSRPTransactionError as e:
        sys.exit('not delivered: %s %s' % (e.code, e.comment))
