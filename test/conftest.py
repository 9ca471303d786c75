"""Shared pytest configuration: every test gets a hard timeout so a bug fails instead of hanging."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker('timeout') is None:
            item.add_marker(pytest.mark.timeout(60))
