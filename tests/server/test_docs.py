"""test_docs.py — runs the curl examples of docs/api.md against a live holdfastd.

Each ```sh block preceded by an <!-- expect: STATUS --> comment is one curl command; it is run
with bash (HF set to the server's URL; HOLD and TOKEN set from the last reply that carried an
id and a token) and must answer STATUS. Blocks without the comment are not run.

usage: test_docs.py PATH/TO/holdfastd docs/api.md
"""
import json
import os
import re
import subprocess
import sys
import unittest

import hfserver
from hfserver import Server

DOC = ""


class Docs(unittest.TestCase):
    def test_curl_examples(self):
        with open(DOC) as f:
            text = f.read()
        blocks = re.findall(r"<!-- expect: (\d+) -->\s*```sh\n(.*?)```", text, re.S)
        self.assertGreater(len(blocks), 15)
        s = Server()
        env = dict(os.environ, HF=s.url)
        try:
            for status, cmd in blocks:
                cmd = cmd.replace("\\\n", " ").strip()
                self.assertIn("curl", cmd)
                out = subprocess.run(["bash", "-c", cmd + " -w '\\n%{http_code}'"], env=env,
                                     capture_output=True, text=True, timeout=30)
                body, _, code = out.stdout.rpartition("\n")
                self.assertEqual(code, status, "%s\n-> %s %s" % (cmd, code, body))
                try:
                    j = json.loads(body)
                except ValueError:
                    continue
                if isinstance(j, dict) and "id" in j and "token" in j:
                    env["HOLD"], env["TOKEN"] = j["id"], j["token"]
        finally:
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    hfserver.BIN = sys.argv.pop(1)
    DOC = sys.argv.pop(1)
    unittest.main()
