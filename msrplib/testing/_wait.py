"""The one way msrplib.testing blocks: under a timeout that fails with what it was waiting for."""

import contextlib

import gevent

#: Seconds any single blocking step of a testing helper may take unless told otherwise.
DEFAULT_TIMEOUT = 10.0


class WaitTimeout(AssertionError):
    """A testing helper waited longer than its timeout; the message says for what.

    An AssertionError, so that a test runner reports it as a failed test, not as an error in the test.
    """


@contextlib.contextmanager
def waiting_for(what, timeout):
    """Run the block under ``timeout`` seconds; on expiry raise :class:`WaitTimeout` naming ``what``."""
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        yield
    except gevent.Timeout as error:
        if error is not timer:
            raise
        raise WaitTimeout('timed out after %s s waiting for %s' % (timeout, what)) from None
    finally:
        timer.close()
