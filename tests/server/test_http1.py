"""test_http1.py — holdfastd's own HTTP/1.1 layer (src/server/http1.c), black-box over raw
sockets: chunked request bodies, pipelining, HTTP/1.0 and keep-alive, Expect: 100-continue,
and the refusals the parser answers with a JSON error (and a close): an oversized header
block, a malformed chunked body, an unsupported Transfer-Encoding, a body over the cap.
One server for the whole file (a few seconds)."""
import json
import sys
import unittest

import hfserver
from hfserver import Server, read_reply, send_raw


def closed(s, timeout=5):
    """Whether the server closed the connection (nothing more comes)."""
    s.settimeout(timeout)
    try:
        return s.rest == b"" and s.recv(1) == b""
    except ConnectionResetError:
        return True


class Http1(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--max-body", "4096", "--max-headers", "2048")

    @classmethod
    def tearDownClass(cls):
        assert cls.s.stop() == 0, cls.s.log_text()

    def raw(self, data):
        s = send_raw(self.s.port, data)
        self.addCleanup(s.close)
        return s

    def assert_error(self, reply, status, code):
        st, h, body = reply
        self.assertEqual(st, status, body)
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertEqual(json.loads(body)["error"]["code"], code, body)

    def test_chunked_body_is_decoded(self):
        body = json.dumps({"capacity": 3}).encode()
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5])
                          for i in range(0, len(body), 5))
        s = self.raw(b"PUT /v1/resources/chunked HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-T: 1\r\n\r\n"
                     b"GET /v1/resources/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        st, _, b = read_reply(s)
        self.assertEqual(st, 201, b)
        st, _, b = read_reply(s)  # the request after the body: the connection went on
        self.assertEqual((st, json.loads(b)["capacity"]), (200, 3))

    def test_chunked_body_over_max_body_is_refused(self):
        # over --max-body: read (as a Content-Length body would be) and refused
        s = self.raw(b"PUT /v1/resources/big HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n1400\r\n" + b"x" * 0x1400 +
                     b"\r\n0\r\n\r\n")
        self.assert_error(read_reply(s), 413, "body_too_large")
        # over the cap (4 x --max-body + 64 KiB): refused at the chunk's size line, closed
        s = self.raw(b"PUT /v1/resources/big HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nFFFFF\r\n" + b"x" * 100)
        self.assert_error(read_reply(s), 413, "body_too_large")
        self.assertTrue(closed(s))

    def test_malformed_chunked_body_is_refused(self):
        for bad in (b"zz\r\nab\r\n0\r\n\r\n", b"2\r\nabc\r\n0\r\n\r\n", b"2\nab\r\n0\r\n\r\n"):
            s = self.raw(b"PUT /v1/resources/bad HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + bad)
            self.assert_error(read_reply(s), 400, "invalid_argument")
            self.assertTrue(closed(s))

    def test_unknown_transfer_coding_is_refused(self):
        s = self.raw(b"PUT /v1/resources/gz HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        self.assert_error(read_reply(s), 501, "not_supported")
        self.assertTrue(closed(s))

    def test_oversized_header_block_gets_json(self):
        s = self.raw(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        self.assert_error(read_reply(s), 400, "invalid_argument")
        self.assertTrue(closed(s))

    def test_malformed_request_line_gets_json(self):
        for bad in (b"GET\r\n\r\n", b"GET / HTTP/2.0\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", b"GET / HTTP/1.1\r\n folded\r\n\r\n"):
            s = self.raw(bad)
            self.assert_error(read_reply(s), 400, "invalid_argument")
            self.assertTrue(closed(s), bad)

    def test_body_over_the_cap_is_refused_from_the_head(self):
        s = self.raw(b"POST /v1/holds HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        self.assert_error(read_reply(s), 413, "body_too_large")
        self.assertTrue(closed(s))

    def test_pipelined_requests_are_answered_in_order(self):
        put = json.dumps({"capacity": 1}).encode()
        s = self.raw(b"PUT /v1/resources/pipe HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     b"GET /v1/resources/pipe HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     % (len(put), put))
        self.assertEqual(read_reply(s)[0], 201)
        st, _, b = read_reply(s)
        self.assertEqual((st, json.loads(b)["name"]), (200, "pipe"))
        self.assert_error(read_reply(s), 404, "route_not_found")
        st, h, _ = read_reply(s, no_body=True)  # HEAD: the length GET would send, no body
        self.assertEqual((st, h["content-length"]), (200, "16"))
        st, h, b = read_reply(s)
        self.assertEqual((st, b, h.get("connection")), (200, b'{"status":"ok"}\n', "close"))
        self.assertTrue(closed(s))

    def test_http10(self):
        s = self.raw(b"GET /healthz HTTP/1.0\r\n\r\n")  # closes after the answer
        st, h, b = read_reply(s)
        self.assertEqual((st, b), (200, b'{"status":"ok"}\n'))
        self.assertTrue(closed(s))
        s = self.raw(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        st, h, _ = read_reply(s)
        self.assertEqual((st, h.get("connection")), (200, "keep-alive"))
        s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
        self.assertEqual(read_reply(s)[0], 200)
        self.assertTrue(closed(s))

    def test_expect_continue(self):
        body = json.dumps({"capacity": 2}).encode()
        s = self.raw(b"PUT /v1/resources/cont HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        self.assertEqual(read_reply(s)[0], 100)
        s.sendall(body)
        self.assertEqual(read_reply(s)[0], 201)

    def test_absolute_form_target(self):
        s = self.raw(b"GET http://example.com/healthz?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(read_reply(s)[:1], (200,))


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    unittest.main()
