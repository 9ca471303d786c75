"""W5, concurrency: N bound idle session pairs in one process over one MSRPServer port (a script, not a test).

    python bench/bench_concurrency.py [--sessions N] [--batch B] [--session-class MSRPSession|GreenMSRPSession]
                                      [--json]

One MSRPServer listens on one port of 127.0.0.1; N ConnectorDirect
connect to it and bind, B at a time (the listen backlog is 128), each
answered by ``MSRPServer.complete``; an :class:`MSRPSession` is started on
both ends of every connection.  Reported:

- set-up rate: pairs per second from the first connect to the last session
  started (both ends in this process, so it counts two sides' work);
- memory per session side: the growth of this process's RSS (after a
  garbage collection and a moment of idleness) divided by 2N.  Kernel
  socket buffers are not in RSS.

The process raises its soft RLIMIT_NOFILE to the hard limit, and the hard
limit too when it may (each pair takes two descriptors).  When the hard
limit is lower than 2N + 64 (e.g. 20,000 in an unprivileged container), it
runs as many pairs as the limit allows and says so.
"""

import argparse
import gc
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))


def rss_bytes():
    """Resident set size of this process (bytes), from /proc/self/statm."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def raise_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, needed))
        if hard != resource.RLIM_INFINITY and hard < needed:
            try:  # root may raise the hard limit too
                resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
                return needed
            except (ValueError, OSError):
                pass
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def run(sessions, batch=100, session_class='MSRPSession'):
    import gevent
    from gevent.pool import Pool
    from msrplib import session as session_module
    from msrplib.connect import ConnectorDirect, MSRPServer
    from msrplib.protocol import URI

    cls = getattr(session_module, session_class)
    limit = raise_nofile(2 * sessions + 256)
    wanted = sessions
    if limit < 2 * sessions + 64:
        # The hard limit cannot be raised without privileges: run as many pairs as it allows, and say so.
        sessions = (limit - 64) // 2
        sys.stderr.write('RLIMIT_NOFILE hard limit is %d: %d pairs instead of %d\n' % (limit, sessions, wanted))
    server = MSRPServer()
    server_uri = URI(host='127.0.0.1', port=0, use_tls=False, session_id='')
    server.prepare(server_uri)
    pairs = []

    def noop(chunk=None, error=None):
        pass

    def make_session(transport):
        if cls is session_module.GreenMSRPSession:
            return cls(transport)
        return cls(transport, on_incoming_cb=noop)

    def one_pair(index):
        local = URI(host='127.0.0.1', port=server_uri.port, use_tls=False)
        server.prepare(local)
        connector = ConnectorDirect()
        remote = connector.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        accepting = gevent.spawn(server.complete, remote)
        transport = connector.complete([local])
        pairs.append((make_session(transport), make_session(accepting.get())))
        server.cleanup(local)

    gc.collect()
    gevent.sleep(0.1)
    before = rss_bytes()
    started = time.perf_counter()
    pool = Pool(batch)
    for index in range(sessions):
        pool.spawn(one_pair, index)
    pool.join(raise_error=True)
    gevent.sleep(0)  # let every session's greenlets start and park
    elapsed = time.perf_counter() - started
    if len(pairs) != sessions:
        raise SystemExit('%d pairs made, %d wanted' % (len(pairs), sessions))
    gc.collect()
    gevent.sleep(0.5)
    gc.collect()
    after = rss_bytes()
    alive = sum(1 for a, b in pairs if a.connected and b.connected)
    result = {'sessions': sessions, 'setup_rate': sessions / elapsed, 'setup_seconds': elapsed,
              'rss_before': before, 'rss_after': after, 'bytes_per_side': (after - before) / (2.0 * sessions),
              'alive': alive, 'session_class': session_class, 'wanted': wanted, 'nofile': limit}
    for a, b in pairs:
        a.msrp.loseConnection()
        b.msrp.loseConnection()
    server.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sessions', type=int, default=2000, help='session pairs (default 2,000)')
    parser.add_argument('--batch', type=int, default=100, help='pairs set up at the same time (default 100)')
    parser.add_argument('--session-class', default='MSRPSession', choices=('MSRPSession', 'GreenMSRPSession'))
    parser.add_argument('--json', action='store_true', help='print the result as JSON (for bench/run.py)')
    args = parser.parse_args(argv)
    result = run(args.sessions, args.batch, args.session_class)
    if args.json:
        print(json.dumps(result))
    else:
        print('%d %s pairs over one MSRPServer port: set up at %.0f pairs/s (%.1f s); '
              '%.1f KiB of RSS per session side; %d pairs still connected'
              % (result['sessions'], args.session_class, result['setup_rate'], result['setup_seconds'],
                 result['bytes_per_side'] / 1024, result['alive']))


if __name__ == '__main__':
    main()
