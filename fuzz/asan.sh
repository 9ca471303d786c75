#!/bin/sh
# The parser tests against an AddressSanitizer + UBSan build of msrplib/_cparser.c (a maintainer's check for
# changes to the C code; not part of test/run.sh).  Needs gcc and the .venv made by test/run.sh.
#   sh fuzz/asan.sh [pytest arguments]
# PYTHONMALLOC=malloc: with Python's own allocator, a read past a small bytes object stays inside its arena
# and ASan does not see it.
set -e
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r msrplib test "$work"/
rm -f "$work"/msrplib/*.so
include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fPIC -shared -I"$include" \
    msrplib/_cparser.c -o "$work/msrplib/_cparser$suffix"
cd "$work"
PYTHONMALLOC=malloc LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$work" \
    "$OLDPWD/.venv/bin/python" -m pytest -q -p no:cacheprovider test/test_protocol_cparser.py \
    test/test_protocol_parser.py test/test_protocol_malformed.py test/test_protocol_properties.py \
    test/test_hostile_parser.py test/test_protocol_data.py test/test_transport.py "$@"
