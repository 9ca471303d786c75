import threading, time
import msrplib.protocol as protocol

def test_other_threads_parse():
    seen = []
    original_scan, original_find = protocol._scan_chunks, protocol._find_marker
    main = threading.get_ident()
    def scan(*args):
        if threading.get_ident() != main:
            seen.append(threading.current_thread().name)
        return original_scan(*args)
    protocol._scan_chunks = scan
    try:
        time.sleep(75)
    finally:
        protocol._scan_chunks = original_scan
    print('OTHER THREAD SCANS', len(seen), set(seen))
    print('THREADS', [t.name for t in threading.enumerate()])
