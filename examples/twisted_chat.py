#!/usr/bin/env python3
"""Chat with ``msrp listen`` and send it a 10 MiB file from a Twisted reactor (msrplib.bridge).

    msrp listen --reply 'Hello from the listener'     # prints  path: msrp://127.0.0.1:PORT/SESSION;tcp
    python examples/twisted_chat.py 'msrp://127.0.0.1:PORT/SESSION;tcp'

Every msrplib call returns a Deferred that fires in the reactor thread, and
incoming messages and progress come as callbacks there too, so the reactor
never waits for msrplib.  Sends two chat lines and a 10 MiB file (with
progress), each asking for the listener's Success-Report, and prints what
the listener says back.  Exits 0 once the listener has confirmed all three,
1 otherwise.  Needs Twisted (``pip install twisted``).
"""

import hashlib
import os
import sys
import tempfile

from twisted.internet import defer, task

from msrplib.bridge import TwistedConnector
from msrplib.protocol import URI
from msrplib.transport import ConnectionDone

LINES = ['Hello from Twisted', 'Here comes a file']
FILE_SIZE = 10 * 1024 * 1024


def make_file(directory):
    """A 10 MiB file of random bytes; returns (its path, its sha256)."""
    path = os.path.join(directory, 'twisted-example.bin')
    digest = hashlib.sha256()
    with open(path, 'wb') as f:
        for _ in range(FILE_SIZE // 65536):
            block = os.urandom(65536)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


class Progress:
    """Prints every tenth of a message acknowledged (called in the reactor thread)."""

    def __init__(self):
        self.shown = -1

    def __call__(self, message):
        tenth = 10 * message.bytes_acknowledged // message.size
        if tenth > self.shown:
            self.shown = tenth
            print('file: %d%% (%d of %d bytes)' % (10 * tenth, message.bytes_acknowledged, message.size),
                  file=sys.stderr, flush=True)


@defer.inlineCallbacks
def main(reactor, listener_path):
    remote_path = URI.parse_path(listener_path)
    connector = TwistedConnector(reactor=reactor)
    yield connector.prepare(URI(host=remote_path[-1].host, use_tls=False))
    try:
        session = yield connector.complete(remote_path)
    except BaseException:
        yield connector.cleanup()
        raise
    ended = defer.Deferred()

    def incoming(chunk, error=None):     # in the reactor thread, one chunk at a time, in order
        if chunk is None:                # the session ended; the Failure says why (ConnectionDone: cleanly)
            if not error.check(ConnectionDone):
                print('session ended:', error.getErrorMessage(), file=sys.stderr)
            ended.callback(None)
        elif chunk.method == 'SEND' and chunk.data:
            print('listener says:', chunk.data.decode('utf-8', 'replace'), flush=True)
    session.on_incoming(incoming)
    try:
        for line in LINES:
            message = yield session.send_large_message(line, 'text/plain', success_report=True)
            yield message.wait()         # the listener's Success-Report came
            print('confirmed:', line, flush=True)
        with tempfile.TemporaryDirectory() as directory:
            path, sha256 = make_file(directory)
            message = yield session.send_file(path, success_report=True, progress_cb=Progress())
            yield message.wait()         # the listener checked the file's hash and saved it
        print('confirmed: file of %d bytes, sha256 %s' % (FILE_SIZE, sha256), flush=True)
    finally:
        yield session.shutdown()
        yield ended                      # what the listener said before the end is printed


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    task.react(lambda reactor: main(reactor, sys.argv[1]).addTimeout(120, reactor))
