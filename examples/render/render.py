"""Renders a document: the handler of the README's first worker.

Run by `wharf worker --exec 'exec python3 examples/render/render.py'`: the job's payload
arrives on standard input, `wharf progress` reports how far it got, `wharf result` sets what
it produced, and the exit code says how it went (0 done, 100 failed for good, else retried).
"""

import json
import subprocess
import sys
import time

job = json.load(sys.stdin)
if "doc" not in job:
    print("the payload has no doc", file=sys.stderr)
    sys.exit(100)  # retrying cannot fix a malformed payload

pages = 3
for page in range(1, pages + 1):
    time.sleep(0.2)  # the real work would be here
    subprocess.run(["wharf", "progress", str(100 * page // pages), "--stage", f"page {page}"], check=True)
subprocess.run(["wharf", "result", json.dumps({"doc": job["doc"], "pages": pages})], check=True)
