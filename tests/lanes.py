#!/usr/bin/env python3
"""Runs the workspace's test binaries, as `cargo test --no-fail-fast` would, in two lanes side
by side, then the timing-sensitive ones alone.

Much of a test binary's time is spent waiting (on moto, on the fake API server's leases, on
the OpenStack, on timers), so two lanes on two cores shorten the test phase: in cold CI runs
256-277 s against 303 s one after the other (where the OpenStack's tests and the interpreted
guests' builds compete for both cores, less). Cargo cannot do this itself: it holds the target
directory's lock while it runs tests, so a second `cargo test` waits for the first.

Usage: lanes.py ARTIFACTS.json, the output of
`cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics`.
Every test listed there runs exactly once (`all` in two parts); a binary this file does not
name runs alone at the end. Each binary runs in its package's directory, as cargo runs it, and its output is
printed whole once it ends. Exits 101 (cargo's code) if any binary failed.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

# Binaries that wait more than they compute, split in two lanes of about equal length. In CI,
# one after the other, they took: aws 59 s, cli 5 s, controller 43 s, languages 58 s; all 84 s
# (the OpenStack tests about 70 s of it), the benches 14 s. An entry is a binary, or a binary
# and the arguments of one part of it: the OpenStack starts once the build is done (a minute),
# so `all` runs its other tests first and its OpenStack tests last.
LANES = [
    ["aws", "cli", "controller", "languages"],
    ["wasmscaler (lib)", "wasmscaler (bin)", "wasmscaler_tests (lib)",
     ("all", ["--skip", "openstack::"]), "decision", "simulate", "quality", "fleet",
     ("all", ["openstack::"])],
]
# Then alone, in this order: the deadline-timing tests and the fuzz corpora (CPU-heavy);
# anything not named above follows them.
ALONE = ["containment", "fuzz_corpora", "hostile"]


def entry(item):
    """An entry's binary and arguments."""
    return (item, []) if isinstance(item, str) else item


def binaries(artifacts_path):
    """The test executables in the artifacts, keyed `name` (or `name (kind)` for unit tests)."""
    found = {}
    with open(artifacts_path) as artifacts:
        for line in artifacts:
            line = line.strip()
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if message.get("reason") != "compiler-artifact" or not message.get("executable"):
                continue
            if not message["profile"]["test"]:
                continue
            target = message["target"]
            kind = target["kind"][0]
            key = target["name"] if kind in ("test", "bench") else f"{target['name']} ({kind})"
            found[key] = (message["executable"], os.path.dirname(message["manifest_path"]))
    return found


class Runner:
    def __init__(self, found):
        self.found = found
        self.failed = []
        self.print_lock = threading.Lock()
        self.env = dict(os.environ)
        # Cargo tells a test where it is; the test kit builds guests with it.
        self.env.setdefault("CARGO", shutil.which("cargo") or "cargo")

    def run(self, key, args):
        executable, directory = self.found[key]
        started = time.monotonic()
        result = subprocess.run(
            [executable, *args], cwd=directory, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        took = time.monotonic() - started
        name = " ".join([key, *args])
        with self.print_lock:
            print(f"     Running {name} ({os.path.relpath(executable)}), {took:.1f} s", flush=True)
            sys.stdout.buffer.write(result.stdout)
            sys.stdout.flush()
            if result.returncode != 0:
                self.failed.append(name)
                print(f"error: test failed: {name} (exit code {result.returncode})", flush=True)

    def lane(self, items):
        for key, args in map(entry, items):
            if key in self.found:
                self.run(key, args)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    found = binaries(sys.argv[1])
    if not found:
        sys.exit(f"lanes.py: no test executable in {sys.argv[1]}")
    named = {entry(item)[0] for lane in LANES for item in lane} | set(ALONE)
    alone = [key for key in ALONE if key in found]
    alone += sorted(key for key in found if key not in named)
    runner = Runner(found)
    lanes = LANES
    if os.environ.get("WASMSCALER_TESTS_WITHOUT_OPENSTACK"):
        # Measuring a run without the OpenStack (tests/run.sh): its tests are left out.
        lanes = [[item for item in lane if item != ("all", ["openstack::"])] for lane in LANES]
        print("lanes.py: WASMSCALER_TESTS_WITHOUT_OPENSTACK is set; the OpenStack tests do not run",
              flush=True)
    threads = [threading.Thread(target=runner.lane, args=(lane,)) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runner.lane(alone)
    if runner.failed:
        print(f"\nerror: {len(runner.failed)} target(s) failed:", flush=True)
        for key in runner.failed:
            print(f"    {key}", flush=True)
        sys.exit(101)


if __name__ == "__main__":
    main()
