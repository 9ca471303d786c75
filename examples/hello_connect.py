#!/usr/bin/env python3
"""The calling side of a two-terminal MSRP chat (see hello_accept.py).

    python examples/hello_connect.py msrp://127.0.0.1:PORT/SESSION;tcp [message ...]

Prints this side's a=path (paste it into hello_accept.py), waits for Enter,
connects, sends each message (default: "Hello!") and prints the answers.
"""

import sys

from msrplib.connect import ConnectorDirect
from msrplib.protocol import URI
from msrplib.session import GreenMSRPSession


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    remote_path = [URI.parse(text) for text in sys.argv[1].split()]
    messages = sys.argv[2:] or ['Hello!']
    connector = ConnectorDirect()
    local_path = connector.prepare(URI(host=remote_path[0].host, use_tls=False))
    print('My path:', ' '.join(str(uri) for uri in local_path), flush=True)
    print('Press Enter once the acceptor has it.', flush=True)
    sys.stdin.readline()
    try:
        transport = connector.complete(remote_path)
    finally:
        connector.cleanup()
    session = GreenMSRPSession(transport, accept_types=['text/plain'])
    for message in messages:
        session.deliver_message(message, 'text/plain')
        answer = session.receive_chunk()
        print('answer:', answer.data.decode('utf-8', 'replace'), flush=True)
    session.shutdown()


if __name__ == '__main__':
    main()
