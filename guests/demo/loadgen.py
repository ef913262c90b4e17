"""Demo load generator: keeps N jobs in flight against the worker replicas.

Workers listen on consecutive ports from --base-port; the generator tries them round-robin,
skipping ports nobody listens on and replicas that answer 503 (full). The load follows a
schedule: idle, then --clients concurrent 1 s jobs, then idle again, so the autoscaler has
something to scale up for and, afterwards, to scale down from.
"""
import argparse
import itertools
import threading
import time
import urllib.error
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--base-port", type=int, default=9100)
parser.add_argument("--ports", type=int, default=6)
parser.add_argument("--clients", type=int, default=10)
parser.add_argument("--start", type=float, default=5, help="seconds of idle before the load")
parser.add_argument("--busy", type=float, default=30, help="seconds of load")
args = parser.parse_args()

ports = itertools.cycle(range(args.base_port, args.base_port + args.ports))
ports_lock = threading.Lock()
done = 0
done_lock = threading.Lock()
t0 = time.monotonic()


def loaded():
    elapsed = time.monotonic() - t0
    return args.start <= elapsed < args.start + args.busy


def client():
    global done
    while time.monotonic() - t0 < args.start + args.busy:
        if not loaded():
            time.sleep(0.2)
            continue
        with ports_lock:
            port = next(ports)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/work?ms=1000", timeout=5):
                with done_lock:
                    done += 1
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)


threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
for t in threads:
    t.start()
print(f"loadgen: idle {args.start:.0f}s, then {args.clients} concurrent jobs for {args.busy:.0f}s", flush=True)
for t in threads:
    t.join()
print(f"loadgen: load over after {done} jobs; idle from now on", flush=True)
