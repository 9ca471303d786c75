#!/bin/sh
# The project's test command (README.md): installs what the suite needs and runs it.
#   - Kamailio (the MSRP relay the relay tests talk to) from Debian, when missing and we are root;
#   - a virtualenv in .venv with msrplib and its test extras;
#   - pytest over test/, or over the test files/directories given (e.g. test/test_relay.py or
#     test/test_relay.py::test_x); other extra arguments (options) are passed to pytest.
# Exits non-zero when anything fails, including when no test ran.
set -e
cd "$(dirname "$0")/.."
if [ -f test/relay/install.sh ]; then
    sh test/relay/install.sh
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# Tests named on the command line run alone; without any, the whole of test/.
for arg in "$@"; do
    case "$arg" in
        *.py | *.py::* | test/*) if [ -e "${arg%%::*}" ]; then exec .venv/bin/python -m pytest "$@"; fi ;;
    esac
done
exec .venv/bin/python -m pytest test "$@"
