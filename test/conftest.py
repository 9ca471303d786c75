"""Shared pytest configuration: every test gets a hard timeout so a bug fails instead of hanging."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker('timeout') is None:
            item.add_marker(pytest.mark.timeout(60))


@pytest.fixture
def short_connect_timeouts(monkeypatch):
    """Connect, incoming-connect and bind timeouts of 2 s, so that a test waiting for one stays fast."""
    from msrplib.connect import MSRPBindSessionTimeout, MSRPConnectTimeout, MSRPIncomingConnectTimeout
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 2)
    monkeypatch.setattr(MSRPIncomingConnectTimeout, 'seconds', 2)
    monkeypatch.setattr(MSRPBindSessionTimeout, 'seconds', 2)
