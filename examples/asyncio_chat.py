#!/usr/bin/env python3
"""Chat with ``msrp listen`` and send it a 10 MiB file, from asyncio (msrplib.bridge).

    msrp listen --reply 'Hello from the listener'     # prints  path: msrp://127.0.0.1:PORT/SESSION;tcp
    python examples/asyncio_chat.py 'msrp://127.0.0.1:PORT/SESSION;tcp'

Sends two chat lines and a 10 MiB file (with progress), each asking for the
listener's Success-Report, and prints what the listener says back.  Exits 0
once the listener has confirmed both lines and the file (it has checked the
file's hash and saved it), 1 otherwise.  The asyncio loop never waits for
msrplib: every call is awaited, callbacks run on the loop.
"""

import asyncio
import hashlib
import os
import sys
import tempfile

from msrplib.bridge import AsyncConnector
from msrplib.protocol import URI
from msrplib.transport import MSRPTransactionError

LINES = ['Hello from asyncio', 'Here comes a file']
FILE_SIZE = 10 * 1024 * 1024


def make_file(directory):
    """A 10 MiB file of random bytes; returns (its path, its sha256)."""
    path = os.path.join(directory, 'asyncio-example.bin')
    digest = hashlib.sha256()
    with open(path, 'wb') as f:
        for _ in range(FILE_SIZE // 65536):
            block = os.urandom(65536)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


async def print_incoming(session):
    """Print what the listener sends until the session ends."""
    async for chunk in session:
        if chunk.method == 'SEND' and chunk.data:
            print('listener says:', chunk.data.decode('utf-8', 'replace'), flush=True)


class Progress:
    """Prints every tenth of a message acknowledged (called on the loop)."""

    def __init__(self):
        self.shown = -1

    def __call__(self, message):
        tenth = 10 * message.bytes_acknowledged // message.size
        if tenth > self.shown:
            self.shown = tenth
            print('file: %d%% (%d of %d bytes)' % (10 * tenth, message.bytes_acknowledged, message.size),
                  file=sys.stderr, flush=True)


async def main(listener_path):
    remote_path = URI.parse_path(listener_path)
    connector = AsyncConnector()
    await connector.prepare(URI(host=remote_path[-1].host, use_tls=False))
    try:
        session = await connector.complete(remote_path)
    except BaseException:
        await connector.cleanup()
        raise
    receiving = asyncio.create_task(print_incoming(session))
    try:
        for line in LINES:
            message = await session.send_large_message(line, 'text/plain', success_report=True)
            await message.wait()                 # the listener's Success-Report came
            print('confirmed:', line, flush=True)
        with tempfile.TemporaryDirectory() as directory:
            path, sha256 = make_file(directory)
            message = await session.send_file(path, success_report=True, progress_cb=Progress())
            await message.wait()                 # the listener checked the file's hash and saved it
        print('confirmed: file of %d bytes, sha256 %s' % (FILE_SIZE, sha256), flush=True)
    finally:
        await session.shutdown()
        await receiving                          # what the listener said before the end is printed


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), 120))
    except MSRPTransactionError as e:
        sys.exit('not delivered: %s %s' % (e.code, e.comment))
