"""A demo worker replica: serves jobs on $PORT with a fixed number of slots.

GET /work?ms=N  occupies one slot for N ms; 503 when every slot is busy.
GET /status     {"available": free slots, "terminate": false, "replica": $REPLICA_INDEX}
                (the shape the `capacity` guest polls).
SIGTERM         stops accepting, lets running jobs finish, exits 0
                (IGNORE_SIGTERM=1 ignores it, to exercise the host's SIGKILL fallback).
"""
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SLOTS = int(os.environ.get("SLOTS", "4"))
PORT = int(os.environ["PORT"])
INDEX = os.environ.get("REPLICA_INDEX", "?")
busy = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global busy
        url = urlparse(self.path)
        if url.path == "/status":
            with lock:
                free = SLOTS - busy
            self.reply(200, {"available": free, "terminate": False, "replica": INDEX})
        elif url.path == "/work":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            with lock:
                if busy >= SLOTS:
                    self.reply(503, {"error": "all slots busy"})
                    return
                busy += 1
            try:
                time.sleep(ms / 1000)
                self.reply(200, {"done": ms, "replica": INDEX})
            finally:
                with lock:
                    busy -= 1
        else:
            self.reply(404, {"error": "not found"})

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = False
if os.environ.get("IGNORE_SIGTERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
