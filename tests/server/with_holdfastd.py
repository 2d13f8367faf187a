#!/usr/bin/env python3
"""with_holdfastd.py — runs a command against a throw-away holdfastd on the embedded store:
a fresh file: store in a temporary directory, a free loopback port. Exports
HF_TEST_ENGINE_URL=http://127.0.0.1:PORT and HF_TEST_ENGINE_RESET (restarts holdfastd on the
same port with an empty store, so every test starts empty). Python 3 standard library only.

usage: with_holdfastd.py PATH/TO/holdfastd COMMAND [ARGS...]   (exits with the command's status)
       with_holdfastd.py --reset STATE_DIR                      (what HF_TEST_ENGINE_RESET runs)
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def gone(pid):
    """True once pid has exited (a zombie counts: its sockets are closed)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def stop(state):
    pid = state.get("pid")
    if not pid or gone(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while not gone(pid):
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.time() + 10
        time.sleep(0.005)


def start(d, state):
    state["n"] = state.get("n", 0) + 1
    store = os.path.join(d, "store-%d" % state["n"])
    os.mkdir(store)
    log_path = os.path.join(d, "holdfastd-%d.log" % state["n"])
    port = state.get("port", 0)
    with open(log_path, "wb") as log:
        p = subprocess.Popen([state["bin"], "--listen", "127.0.0.1:%d" % port, "--engine",
                              "file:" + os.path.join(store, "holdfast.db"), "--log-level", "warn",
                              "--drain-timeout", "2"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=store,
                             start_new_session=True)
    deadline = time.time() + 30
    while True:
        with open(log_path, "rb") as f:
            m = re.search(rb"msg=listening addr=\S+ port=(\d+)", f.read())
        if m:
            break
        if p.poll() is not None or time.time() > deadline:
            if p.poll() is None:
                p.kill()
            sys.stderr.write(open(log_path, errors="replace").read())
            raise SystemExit("with_holdfastd: holdfastd did not start")
        time.sleep(0.005)
    state["pid"] = p.pid
    state["port"] = int(m.group(1))
    # the store of the test before is not needed any more
    prev = os.path.join(d, "store-%d" % (state["n"] - 1))
    shutil.rmtree(prev, ignore_errors=True)


def save(d, state):
    tmp = os.path.join(d, "state.json.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(d, "state.json"))


def reset(d):
    with open(os.path.join(d, "state.json")) as f:
        state = json.load(f)
    stop(state)
    start(d, state)
    save(d, state)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--reset":
        reset(sys.argv[2])
        return 0
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    d = tempfile.mkdtemp(prefix="hf-with-holdfastd-")
    state = {"bin": os.path.abspath(sys.argv[1])}
    rc = 1
    try:
        start(d, state)
        save(d, state)
        env = dict(os.environ)
        env["HF_TEST_ENGINE_URL"] = "http://127.0.0.1:%d" % state["port"]
        env["HF_TEST_ENGINE_RESET"] = "%s %s --reset %s" % (
            shlex.quote(sys.executable), shlex.quote(os.path.abspath(__file__)), shlex.quote(d))
        rc = subprocess.call(sys.argv[2:], env=env)
    finally:
        try:
            with open(os.path.join(d, "state.json")) as f:
                state = json.load(f)
            stop(state)
        finally:
            if rc == 0:
                shutil.rmtree(d, ignore_errors=True)
            else:
                sys.stderr.write("with_holdfastd: logs kept in %s\n" % d)
    return rc


if __name__ == "__main__":
    sys.exit(main())
