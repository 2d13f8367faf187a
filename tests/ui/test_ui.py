"""test_ui.py — the dashboard (/ui) end to end in a real headless Chromium, driven over
WebDriver (chromedriver) from the Python standard library.

Starts holdfastd with an API key, loads the page (which asks for the key), makes contention
through the API (a holder, three parked waiters, refused attempts), and checks that the page
shows the holder, the waiters in queue order with their wait times and the live events; then
releases the hold from the page (a confirmation, then an operator release with the page's API
key) and sees the first waiter take over and the queue move up. Screenshots (light and dark)
are written to ARTIFACTS and checked: not blank (decoded PNG, colour variety) and the
expected elements present (DOM queries). Also: the page's weight, the assets are public, the
data routes are not; and the page over HTTPS. Exit 77 (skipped) when chromium or chromedriver is not installed.

Usage: test_ui.py HOLDFASTD ARTIFACTS_DIR
"""
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "server"))

import hfserver  # noqa: E402
import png  # noqa: E402
import webdriver  # noqa: E402

KEY = "ui-test-key-0123456789abcdef"
WEIGHT_MAX = 200 * 1024


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def check_png(data, name):
    # The top 450 rows (header, charts, the tables' heads): decoding in pure Python is slow.
    colours, busy = png.variety(data, max_rows=450)
    print("%s: %d colours, %.1f%% of the top not background" % (name, colours, 100 * busy))
    check(colours >= 40, "%s looks blank: %d colours" % (name, colours))
    check(busy >= 0.03, "%s looks blank: %.2f%% differs from the background" % (name, 100 * busy))


def traffic(srv, seconds):
    """Grants, conflicts, timeouts and short leases running out, for the charts."""
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        i += 1
        seat = "seat-%02d" % (7 + i % 3)
        srv.post("/v1/holds", {"owner": "load-%d" % i, "resources": [seat],
                               "ttl_ms": 300 + 100 * (i % 7), "wait_ms": 150 * (i % 3)})
        time.sleep(0.05)


def test_assets(srv):
    """The page's files are public and small; the data routes keep requiring the key."""
    total = 0
    for path in ("/ui", "/ui/app.js", "/ui/app.css"):
        st, body, r = srv.request("GET", path, headers={"Authorization": ""})
        check(st == 200, "%s: %d without a key" % (path, st))
        check("default-src 'none'" in r.getheader("Content-Security-Policy", ""), path + ": CSP")
        total += len(body.encode())
    print("page weight: %d bytes (%.1f KB)" % (total, total / 1024))
    check(total < WEIGHT_MAX, "page weight %d bytes is over %d" % (total, WEIGHT_MAX))
    st, _, _ = srv.request("GET", "/ui/nothing.js", headers={"Authorization": ""})
    check(st == 404, "unknown asset: %d" % st)
    for path in ("/v1/resources", "/v1/stats/series", "/v1/events?after=0&limit=1"):
        st, _, _ = srv.request("GET", path, headers={"Authorization": ""})
        check(st == 401, "%s without a key: %d, expected 401" % (path, st))
    st, body, _ = srv.get("/v1/stats/series?seconds=10")
    check(st == 200 and isinstance(body["points"], list) and body["interval_ms"] == 1000,
          "series: %r" % (body,))
    st, _, _ = srv.get("/v1/stats/series?seconds=301")
    check(st == 400, "series seconds=301: %d" % st)
    return total


def wait_api(cond, what, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_sagas(srv, b, artifacts):
    """The sagas panel: one saga failed (compensated), one stuck as compensation_failed (its
    compensation calls a closed port); its timeline; Resume… from the page."""
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
    once = {"attempts": 1, "backoff_ms": 10}
    pay = {"name": "pay", "action": {"http": {"method": "POST", "url": dead + "/pay"},
                                     "retry": once}}

    def seat(comp):
        return {"name": "seat", "action": {"hold": {"op": "acquire", "resource":
                                                    "saga/{{input.tag}}", "capacity": 1,
                                                    "ttl_ms": 60000}},
                "compensation": comp}
    st, _, _ = srv.put("/v1/saga-types/ui_fails", {"steps": [
        seat({"hold": {"op": "release", "of": "seat"}}), pay]})
    check(st == 201, "saga type ui_fails: %d" % st)
    st, _, _ = srv.put("/v1/saga-types/ui_stuck", {"steps": [
        seat({"http": {"method": "POST", "url": dead + "/undo"}, "retry": once}), pay]})
    check(st == 201, "saga type ui_stuck: %d" % st)
    ids = {}
    for t in ("ui_fails", "ui_stuck"):
        st, g, _ = srv.post("/v1/sagas", {"type": t, "input": {"tag": t}})
        check(st == 201, "start %s: %d %r" % (t, st, g))
        ids[t] = g["id"]
    want = {"ui_fails": "failed", "ui_stuck": "compensation_failed"}
    for t, sid in ids.items():
        wait_api(lambda: srv.get("/v1/sagas/" + sid)[1]["state"] == want[t],
                 "saga %s to be %s" % (t, want[t]))
    b.wait("return !document.querySelector('#sagas').hidden && "
           "document.querySelector('#sagas tr[data-saga=\"' + arguments[0] + '\"]')?.dataset.state"
           " === 'failed' && document.querySelector('#sagas tr[data-saga=\"' + arguments[1] + "
           "'\"]')?.dataset.state === 'compensation_failed'", "the sagas panel", 30,
           ids["ui_fails"], ids["ui_stuck"])
    stuck = ids["ui_stuck"]
    b.click('#sagas button[data-key="tl:%s"]' % stuck)
    b.wait("return [...document.querySelectorAll('#saga-timeline li')].some(l => "
           "l.textContent.includes('compensation failed'))", "the stuck saga's timeline")
    b.js("document.querySelector('#sagas button[data-key=\"res:' + arguments[0] + '\"]')"
         ".scrollIntoView()", stuck)
    check_png(b.screenshot(os.path.join(artifacts, "dashboard-sagas.png")), "dashboard-sagas.png")
    _, before, _ = srv.get("/v1/sagas/" + stuck)
    b.js("document.querySelector('#sagas button[data-key=\"res:' + arguments[0] + '\"]')"
         ".focus()", stuck)
    b.keys("\ue007")
    b.wait("return document.querySelector('#resume-dialog').open && "
           "document.activeElement.id === 'resume-confirm'", "the resume confirmation")
    b.keys("\ue007")
    b.wait("return !document.querySelector('#resume-dialog').open", "the resume dialog closed")
    # Resumed: its compensation ran again (and, the port still closed, failed again).
    wait_api(lambda: len(srv.get("/v1/sagas/" + stuck)[1]["timeline"]) > len(before["timeline"])
             and srv.get("/v1/sagas/" + stuck)[1]["state"] == "compensation_failed",
             "the resumed saga to run its compensation again")


def test_tls(b):
    """The same page over HTTPS (self-signed; the session accepts it): data and live events."""
    if not shutil.which("openssl"):
        print("no openssl command: the TLS part is skipped")
        return
    d = tempfile.mkdtemp(prefix="hf-ui-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    s = hfserver.Server("--tls-cert", cert, "--tls-key", key, store_dir=d, tls=True)
    ok = False
    try:
        s.put("/v1/resources/tls-seat", {"capacity": 2})
        b.get(s.url + "/ui")
        b.wait("return location.protocol === 'https:' && "
               "document.querySelector('#events-state').textContent === 'live' && "
               "!!document.querySelector('#resources button[data-name=\"tls-seat\"]')",
               "the page over TLS")
        st, h, _ = s.post("/v1/holds", {"owner": "tls-owner", "resources": ["tls-seat"]})
        # Without an API key holdfastd takes no operator release: every client would be one.
        st, e, _ = s.post("/v1/holds/%s/release" % h["id"], {"operator": True})
        check(st == 403 and e["error"]["code"] == "operator_needs_api_key",
              "operator release without --api-key: %d %r" % (st, e))
        b.wait("return [...document.querySelectorAll('#events li')].some(l => "
               "l.textContent.includes('tls-owner'))", "a live event over TLS")
        ok = True
    finally:
        rc = s.stop()
        if ok and rc == 0:
            shutil.rmtree(d, ignore_errors=True)
    check(rc == 0, "the TLS holdfastd exited %s" % rc)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    hfserver.BIN = os.path.abspath(sys.argv[1])
    artifacts = os.path.abspath(sys.argv[2])
    os.makedirs(artifacts, exist_ok=True)
    tools = webdriver.find_browser()
    if not tools:
        print("SKIP: chromium and chromedriver are needed (scripts/deps test)")
        return 77
    t0 = time.time()
    srv = hfserver.Server("--api-key", KEY, api_key=KEY)
    browser = None
    waiter = {}
    passed = False
    try:
        weight = test_assets(srv)

        # Some resources to list and one to fight over.
        for i in range(1, 13):
            st, _, _ = srv.put("/v1/resources/seat-%02d" % i, {"capacity": 1 if i % 3 else 4})
            check(st == 201, "put seat-%02d: %d" % (i, st))
        st, _, _ = srv.put("/v1/resources/lounge", {"capacity": 10})
        for i in range(1, 21):  # 33 resources: two pages of 25
            srv.put("/v1/resources/zone-%02d" % i, {"capacity": 2})
        for i in (2, 5, 6):
            srv.post("/v1/holds", {"owner": "carol-%d" % i, "resources": ["seat-%02d" % i],
                                   "ttl_ms": 20000 + 4000 * i})
        srv.post("/v1/holds", {"owner": "dave", "resources": [{"name": "lounge", "units": 7}],
                               "ttl_ms": 12000})

        browser = webdriver.Browser(*tools, log_dir=artifacts)
        b = browser
        b.get(srv.url + "/ui")

        # The page asks for the key once and keeps it in sessionStorage.
        b.wait("return document.querySelector('#key-dialog').open", "the API key dialog")
        b.type("#key-input", KEY)
        b.click("#key-save")
        b.wait("return !document.querySelector('#key-dialog').open && "
               "document.querySelector('#conn').textContent === 'connected'", "connected")
        check(b.js("return sessionStorage.getItem('holdfast.apiKey')") == KEY, "key not kept")
        b.wait("return document.querySelector('#events-state').textContent === 'live'",
               "the event stream")

        # Paged by the server: 25, then the 8 after them; never more than a page.
        b.wait("return document.querySelectorAll('#resources tbody tr[data-name]').length === 25"
               " && !document.querySelector('#next').disabled", "the first page")
        b.click("#next")
        b.wait("const r = [...document.querySelectorAll('#resources tbody tr[data-name]')];"
               "return r.length === 8 && r[7].dataset.name === 'zone-20' && "
               "document.querySelector('#next').disabled", "the second page")
        b.click("#prev")
        b.wait("const r = document.querySelectorAll('#resources tbody tr[data-name]');"
               "return r.length === 25 && r[0].dataset.name === 'lounge'", "the first page again")

        # Contention: alice holds seat-01, bob waits for it, eve is refused twice.
        st, alice, _ = srv.post("/v1/holds", {"owner": "alice", "resources": ["seat-01"],
                                              "ttl_ms": 60000})
        check(st == 201, "alice: %d %r" % (st, alice))

        # Three waiters, parked one after the other (each seen in the queue before the next).
        def park(owner):
            try:
                waiter[owner] = srv.post("/v1/holds", {"owner": owner, "resources": ["seat-01"],
                                                       "wait_ms": 60000, "ttl_ms": 30000})
            except OSError as e:  # frank and grace still wait when a slow run ends
                waiter[owner] = (None, str(e), None)
        threads = []
        for n, owner in enumerate(("bob", "frank", "grace"), 1):
            threads.append(threading.Thread(target=park, args=(owner,), daemon=True))
            threads[-1].start()
            wait_api(lambda: len(srv.get("/v1/resources/seat-01/waiters")[1]["waiters"]) == n,
                     "%s parked" % owner)
        st, q, _ = srv.get("/v1/resources/seat-01/waiters?limit=2")
        check(st == 200 and [w["owner"] for w in q["waiters"]] == ["bob", "frank"] and q["more"]
              and q["next_cursor"] == "2" and all("token" not in w for w in q["waiters"]),
              "the waiters route: %r" % (q,))
        th = threads[0]
        for _ in range(2):
            st, _, _ = srv.post("/v1/holds", {"owner": "eve", "resources": ["seat-01"]})
            check(st == 409, "eve: %d" % st)

        # Search by keyboard: focus the box, type the prefix, Enter.
        b.js("document.querySelector('#search').focus()")
        b.keys("seat-0\ue007")
        b.wait("const r = [...document.querySelectorAll('#resources tbody tr[data-name]')];"
               "return r.length === 9 && r.every(x => x.dataset.name.startsWith('seat-0'))",
               "the search results")
        b.click('#resources button[data-name="seat-01"]')
        b.wait("const o = document.querySelector('#holders tbody tr[data-hold] .owner');"
               "return o && o.textContent === 'alice'", "alice as the holder")
        b.wait("return /^3 waiters queued$/.test(document.querySelector('#waiters').textContent)",
               "three waiters")
        b.wait("const r = [...document.querySelectorAll('#waiters-table tbody tr[data-owner]')];"
               "return r.map(x => x.dataset.position + x.dataset.owner).join() === "
               "'1bob,2frank,3grace' && r.every(x => /s$/.test(x.querySelector('.waited')"
               ".textContent))", "the waiters in queue order, with their wait times")
        fence = b.js("return document.querySelector('#holders .fence').textContent")
        check(fence == str(alice["fence"]["seat-01"]), "fence %r vs %r" % (fence, alice["fence"]))
        check(b.js("return !!document.querySelector('#holders td.lease .bar')"), "lease bar")
        b.wait("return [...document.querySelectorAll('#events li')].some(l => "
               "l.classList.contains('hold.granted') && l.dataset.resource === 'seat-01' && "
               "l.textContent.includes('alice'))", "alice's grant in the live events")
        b.wait("return document.querySelector('#rates-now').textContent.includes('conflicts') &&"
               " document.querySelector('#chart-rates').width > 0", "the charts")
        b.wait("return document.querySelectorAll('#expiring tbody tr[data-hold]').length >= 4",
               "the holds about to expire")

        # Filter the events by resource.
        b.type("#events-filter", "lounge")
        b.wait("const v = [...document.querySelectorAll('#events li')].filter(l => !l.hidden);"
               "return v.length > 0 && v.every(l => l.dataset.resource.includes('lounge'))",
               "the event filter")
        b.js("const f = document.querySelector('#events-filter'); f.value = '';"
             "f.dispatchEvent(new Event('input'))")

        # What the page asked the server for: pages of 25 resources, never /v1/stats (which
        # reads up to 10,000 resources), never a list without a limit.
        urls = b.js("return performance.getEntriesByType('resource').map(e => e.name)")
        lists = [u for u in urls if "/v1/resources?" in u]
        check(lists and all("limit=25" in u for u in lists), "resource lists: %r" % lists[:5])
        check(not [u for u in urls if "/v1/stats?" in u or u.endswith("/v1/stats")],
              "the page read /v1/stats")

        docs_png = os.environ.get("HF_UI_DOCS_PNG")
        if docs_png:
            traffic(srv, 12)  # a dozen seconds of charts for the picture in docs/
        else:
            time.sleep(1.2)  # let one more second of the series close, for the picture
        b.js("document.activeElement.blur(); window.scrollTo(0, 0)")
        shot = os.path.join(artifacts, "dashboard.png")
        check_png(b.screenshot(shot), "dashboard.png")
        if docs_png:
            # The picture in README and docs/dashboard.md: the same page, scaled down.
            size = b.js("return [document.documentElement.scrollWidth, "
                        "document.documentElement.scrollHeight]")
            shot = b.cdp("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 0.75}})
            with open(docs_png, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        b.cdp("Emulation.setEmulatedMedia",
              {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        b.wait("return getComputedStyle(document.body).backgroundColor === 'rgb(21, 23, 26)'",
               "dark mode")
        check_png(b.screenshot(os.path.join(artifacts, "dashboard-dark.png")),
                  "dashboard-dark.png")
        b.cdp("Emulation.setEmulatedMedia", {"features": []})

        # Release alice's hold from the page, by keyboard: Enter on its button, the
        # confirmation (the focus is on its Release button), Enter: an operator release, sent
        # with the API key the page uses.
        b.js("document.querySelector('#holders tr[data-hold=\"' + arguments[0] + '\"] "
             "button.release').focus()", alice["id"])
        b.keys("\ue007")
        b.wait("return document.querySelector('#release-dialog').open && "
               "document.activeElement.id === 'release-confirm' && "
               "document.querySelector('#release-id').textContent === arguments[0]",
               "the confirmation", 30, alice["id"])
        check_png(b.screenshot(os.path.join(artifacts, "dashboard-confirm.png")),
                  "dashboard-confirm.png")
        b.keys("\ue007")
        b.wait("return !document.querySelector('#release-dialog').open", "the dialog closed")
        th.join(10)
        st, bob = waiter.get("bob", (None, None, None))[:2]
        check(st == 201 and bob["owner"] == "bob", "bob after the release: %r %r" % (st, bob))
        st, h, _ = srv.get("/v1/holds/" + alice["id"])
        check(h["state"] == "released", "alice's hold is %s" % h["state"])
        b.wait("const o = [...document.querySelectorAll('#holders tbody tr[data-hold] .owner')];"
               "return o.length === 1 && o[0].textContent === 'bob'", "bob as the holder")
        b.wait("const r = [...document.querySelectorAll('#waiters-table tbody tr[data-owner]')];"
               "return r.map(x => x.dataset.position + x.dataset.owner).join() === "
               "'1frank,2grace' && /^2 waiters /.test("
               "document.querySelector('#waiters').textContent)", "the queue moved up")
        b.wait("return [...document.querySelectorAll('#events li')].some(l => "
               "l.classList.contains('hold.released') && l.dataset.resource === 'seat-01' && "
               "l.textContent.includes('by=operator'))", "the operator's release in the events")
        check_png(b.screenshot(os.path.join(artifacts, "dashboard-released.png")),
                  "dashboard-released.png")
        # The series the charts draw counted this: 6 grants (carol x3, dave, alice, bob),
        # eve's 2 conflicts, no timeout; bob's grant waited for alice's release (seconds).
        if not docs_png:
            st, ser, _ = srv.get("/v1/stats/series")
            pts = ser["points"]
            total = {k: sum(p[k] for p in pts) for k in ("granted", "conflicts", "timeouts")}
            check(total == {"granted": 6, "conflicts": 2, "timeouts": 0}, "series: %r" % total)
            check(max(p["latency_ms"]["p99"] for p in pts) >= 500, "bob's wait not in the p99")
            # Bob's grant after alice's release is a hand-off, counted from the event log.
            wait_api(lambda: sum(p["handoff_ms"]["n"] for p in
                                 srv.get("/v1/stats/series")[1]["points"]) == 1,
                     "one hand-off in the series")
        test_sagas(srv, b, artifacts)
        test_tls(b)
        passed = True
        print("ok: page %.1f KB, %.1f s, screenshots in %s" % (weight / 1024, time.time() - t0,
                                                                 artifacts))
        return 0
    finally:
        if browser:
            browser.quit()
        rc = srv.stop()
        if rc != 0:
            print("holdfastd exited %s:\n%s" % (rc, srv.log_text()[-3000:]))
            if passed:
                raise AssertionError("holdfastd exited %s (sanitizer report above?)" % rc)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print("FAIL:", e)
        sys.exit(1)
