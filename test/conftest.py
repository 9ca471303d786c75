"""Shared pytest configuration: every test gets a hard timeout so a bug fails instead of hanging."""

import pytest

from parser_implementations import C_FUNCTIONS, C_IMPORT_ERROR, PURE_PYTHON, select


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker('timeout') is None:
            item.add_marker(pytest.mark.timeout(60))


@pytest.fixture
def closing():
    """A list of sessions, transports, connectors and acceptors to close at the end of the test."""
    from msrplib.session import MSRPSession
    things = []
    yield things
    for thing in things:
        try:
            if isinstance(thing, MSRPSession):
                thing.msrp.loseConnection(wait=False)
            elif hasattr(thing, 'loseConnection'):
                thing.loseConnection(wait=False)
            else:
                thing.cleanup()
        except Exception:  # already closed, or never connected: nothing to release
            pass


@pytest.fixture
def short_connect_timeouts(monkeypatch):
    """Connect, incoming-connect and bind timeouts of 2 s, so that a test waiting for one stays fast."""
    from msrplib.connect import MSRPBindSessionTimeout, MSRPConnectTimeout, MSRPIncomingConnectTimeout
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 2)
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 2)
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 2)


# A module whose tests must hold for both implementations of MSRPParser (with and without the C fast
# path, msrplib._cparser) sets
#     pytestmark = pytest.mark.usefixtures('parser_implementation')
# and each of its tests runs twice, with ids ending in [c] and [python].  The fixture is module-scoped
# (it sets module globals of msrplib.protocol and restores them), so that hypothesis tests may use it.

@pytest.fixture(scope='module', params=[
    pytest.param('c', marks=pytest.mark.skipif(C_FUNCTIONS is None,
                                               reason='msrplib._cparser not built (%s)' % C_IMPORT_ERROR)),
    'python'])
def parser_implementation(request):
    """'c': MSRPParser takes whole, plain chunks through msrplib._cparser; 'python': pure Python."""
    previous = select(C_FUNCTIONS if request.param == 'c' else PURE_PYTHON)
    try:
        yield request.param
    finally:
        select(previous)
