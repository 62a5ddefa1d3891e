"""A small web app that renders documents: the README's `wharf worker --http` target.

`python3 examples/render/app.py 127.0.0.1:8000` serves POST /jobs. wharf posts each job's
payload there; a 2xx answer succeeds with its JSON body as the result, 400/410/422 fail the job
for good, anything else is retried.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Jobs(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            doc = json.loads(body)["doc"]
        except (ValueError, KeyError, TypeError):
            self.answer(422, {"error": "the payload has no doc"})
            return
        self.answer(200, {"doc": doc, "pages": 3, "job": self.headers.get("X-Wharf-Job-Id")})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # wharf's worker logs every job already


host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000").rsplit(":", 1)
ThreadingHTTPServer((host, int(port)), Jobs).serve_forever()
