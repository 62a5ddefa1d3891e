#!/usr/bin/env python3
"""Measures the disk's own fdatasync latency, the floor under every durable commit.

Usage: scripts/disk-fsync-latency.py [DIR]  (default: the current directory)
Writes 8 KiB and fdatasyncs it 1,000 times at about 100 per second, then prints percentiles.
"""
import os
import sys
import time

path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", ".fsync-latency.test")
fd = os.open(path, os.O_RDWR | os.O_CREAT)
try:
    os.ftruncate(fd, 1 << 20)
    samples = []
    for i in range(1000):
        os.pwrite(fd, b"x" * 8192, (i % 100) * 8192)
        started = time.perf_counter()
        os.fdatasync(fd)
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    samples.sort()
    print("fdatasync ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f" % (samples[500], samples[900], samples[990], samples[-1]))
finally:
    os.close(fd)
    os.unlink(path)
