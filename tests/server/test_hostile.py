"""test_hostile.py — holdfastd under hostile or clumsy clients (issue 9): signals during
start-up, bad UTF-8 in messages, request smuggling, odd methods, half-closed waiters, slow
consumers, slow senders, unauthenticated floods, big stores. Each test is short and bounded;
time bounds are one-sided.

usage: test_hostile.py PATH/TO/holdfastd [unittest args]
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import hfserver
from hfserver import Server

KEY = "hostile-key-0123456789abcdef"


def read_reply(s, timeout=10):
    """Reads one HTTP reply (headers and a Content-Length body) from a socket: (status,
    headers dict with lowercase names, body bytes). Status 0: the server closed first."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return 0, {}, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body[:n] if "content-length" in headers else body


def send_raw(port, data, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    return s


class Startup(unittest.TestCase):
    def test_sigterm_during_startup_exits_0(self):
        """SIGTERM while holdfastd is still reading its config and opening the store: exit 0.

        The config file is a FIFO, so the signal provably lands before the store is opened:
        the test sends it as soon as holdfastd has opened the FIFO, then lets it go on."""
        d = tempfile.mkdtemp(prefix="hf-startterm-")
        for i in range(20):
            fifo = os.path.join(d, "conf-%d" % i)
            os.mkfifo(fifo)
            log = open(os.path.join(d, "log-%d" % i), "wb")
            p = subprocess.Popen([hfserver.BIN, "--listen", "127.0.0.1:0", "--config", fifo,
                                  "--engine", "file:" + os.path.join(d, "s%d.db" % i)],
                                 stderr=log, cwd=d)
            try:
                with open(fifo, "w") as f:  # returns once holdfastd opened it for reading
                    p.send_signal(signal.SIGTERM if i % 2 == 0 else signal.SIGINT)
                    f.write("log-level = info\n")
                self.assertEqual(p.wait(20), 0, "run %d" % i)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                log.close()


class Messages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server()

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0, cls.s.log_text()

    def test_long_utf8_names_give_their_real_error(self):
        """Messages quoting long multi-byte names are clipped on a character boundary and the
        JSON error is the real one (404/409/422), never 503 out_of_memory."""
        for ch in ("\u00e9", "\u20ac", "\U0001d11e"):
            for nbytes in range(240, 256):
                n = nbytes // len(ch.encode())
                name = ch * n
                q = urllib.parse.quote(name, safe="")
                st, body, _ = self.s.get("/v1/resources/" + q)
                self.assertEqual((st, body["error"]["code"]), (404, "resource_not_found"), name)
                st, body, _ = self.s.post("/v1/holds", {"owner": "o", "resources": [
                    {"name": name, "units": 5, "capacity": 2}]})
                self.assertEqual((st, body["error"]["code"]), (422, "exceeds_capacity"), name)
                self.assertTrue(body["error"]["message"])
                st, body, _ = self.s.delete("/v1/resources/" + q)
                self.assertEqual(st, 404, body)


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
