"""webdriver.py — a minimal W3C WebDriver client over urllib (Python 3 standard library only),
enough to drive Debian's chromium through chromedriver in the dashboard's tests.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from hfserver import free_port  # noqa: E402

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier


class WebDriverError(Exception):
    pass


def find_browser():
    """(chromium, chromedriver) paths, or None when either is missing."""
    chrome = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chrome or not driver:
        return None
    return chrome, driver


class Browser:
    """chromedriver on a free loopback port and one headless chromium session."""

    def __init__(self, chrome, driver, width=1366, height=900, log_dir=None):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="hf-ui-chrome-")
        self.log = open(os.path.join(log_dir or self.profile, "chromedriver.log"), "wb")
        self.proc = subprocess.Popen([driver, "--port=%d" % self.port], stdout=self.log,
                                     stderr=self.log)
        self.base = "http://127.0.0.1:%d" % self.port
        self.sid = None
        try:
            self._wait_ready()
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": True,
                "goog:chromeOptions": {
                    "binary": chrome,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run",
                             "--disable-background-networking", "--disable-extensions",
                             "--user-data-dir=" + self.profile,
                             "--window-size=%d,%d" % (width, height)],
                },
            }}}
            self.sid = self._call("POST", "/session", caps, timeout=60)["sessionId"]
        except BaseException:
            self.quit()
            raise

    def _wait_ready(self):
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/status", timeout=2) as r:
                    if json.load(r)["value"].get("ready"):
                        return
            except (OSError, ValueError, KeyError):
                pass
            if self.proc.poll() is not None:
                raise WebDriverError("chromedriver exited %s" % self.proc.returncode)
            time.sleep(0.05)
        raise WebDriverError("chromedriver did not start")

    def _call(self, method, path, body=None, timeout=30):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                out = json.load(r)
        except urllib.error.HTTPError as e:
            try:
                v = json.load(e).get("value", {})
            except ValueError:
                v = {}
            raise WebDriverError("%s %s: %s %s" % (method, path, v.get("error"), v.get("message", "")[:300]))
        v = out.get("value")
        if out.get("sessionId") and isinstance(v, dict):
            v.setdefault("sessionId", out["sessionId"])
        return v

    def s(self, method, path, body=None, timeout=30):
        return self._call(method, "/session/%s%s" % (self.sid, path), body, timeout)

    # ---- What the tests use. ----
    def get(self, url):
        self.s("POST", "/url", {"url": url}, timeout=60)

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(v, dict) or ELEMENT not in v:
            raise WebDriverError("find %s: %r" % (css, v))
        return v[ELEMENT]

    def click(self, css):
        # The page redraws its tables as data arrives: find again when the element went stale.
        for attempt in range(5):
            try:
                self.s("POST", "/element/%s/click" % self.find(css))
                return
            except WebDriverError as e:
                if "stale element" not in str(e) or attempt == 4:
                    raise

    def type(self, css, text):
        self.s("POST", "/element/%s/value" % self.find(css), {"text": text})

    def keys(self, text):
        """Types text into whatever has the focus (W3C actions: the keyboard)."""
        acts = []
        for ch in text:
            acts += [{"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch}]
        self.s("POST", "/actions", {"actions": [{"type": "key", "id": "kbd", "actions": acts}]})
        self.s("DELETE", "/actions")

    def wait(self, script, what, timeout=30, *args):
        """Polls a JS expression (the body of a function) until it returns a true value."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.js(script, *args)
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))

    def cdp(self, cmd, params):
        return self.s("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

    def screenshot(self, path):
        """The whole page (beyond the window), as PNG bytes, also written to path."""
        shot = self.cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        png = base64.b64decode(shot["data"])
        with open(path, "wb") as f:
            f.write(png)
        return png

    def quit(self):
        if self.sid:
            try:
                self._call("DELETE", "/session/" + self.sid, timeout=20)
            except (OSError, WebDriverError):
                pass
            self.sid = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
