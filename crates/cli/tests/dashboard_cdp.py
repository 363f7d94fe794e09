"""Drives a real headless Chromium through the dashboard with the Chrome DevTools
Protocol (websocket-client), for crates/cli/tests/dashboard.rs:

    python dashboard_cdp.py CHROMIUM BASE_URL TOKEN SERVICE OUT_DIR

Opens BASE_URL/ui/ (expecting the login page), types TOKEN into the form, submits,
waits for the overview and one htmx refresh, opens the service page, screenshots both
(OUT_DIR/overview.png, OUT_DIR/service.png), logs out, signs in again and loses the
cookie (the next refresh must go to the login page), and prints one JSON object of what
it saw. Every wait has a
deadline; the browser is killed on the way out, whatever happens."""
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


class Timeout(Exception):
    pass


def on_alarm(_sig, _frame):
    raise Timeout("the browser session took longer than 240 s")


class Page:
    """One page target: commands by id, events kept for later."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def wait(self, what, expression, within=20.0):
        deadline = time.monotonic() + within
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.js(expression)
                if last:
                    return last
            except RuntimeError as e:  # the page is navigating
                last = str(e)
            time.sleep(0.1)
        raise Timeout(f"{what}: still {last!r} after {within} s")

    def loaded_at(self, path, within=30.0):
        self.wait(
            f"the page {path}",
            f"location.pathname === {json.dumps(path)} && document.readyState === 'complete'",
            within,
        )


def sign_in(page, token):
    """Types the token into the login form and submits it; waits for the overview."""
    page.js("document.getElementById('token').focus()")
    page.call("Input.insertText", text=token)
    page.js("document.querySelector('form.login button[type=submit]').click()")
    page.loaded_at("/ui/")


def screenshot(page, out_dir, name):
    """The window as a PNG file in out_dir; returns its path."""
    shot = page.call("Page.captureScreenshot", format="png")
    path = os.path.join(out_dir, name)
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    return path


def devtools_port(profile, browser, within=60.0):
    """Chromium writes the port it chose (--remote-debugging-port=0) into the profile."""
    path = os.path.join(profile, "DevToolsActivePort")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise RuntimeError(f"chromium exited with {browser.returncode}")
        try:
            with open(path) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise Timeout("chromium did not open its DevTools port")


def session(chromium, base, token, service, out_dir, profile):
    browser = subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            # Nothing leaves the machine: no background services (updates, sync, pings);
            # the page itself loads only from the node (checked below).
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--no-pings",
            "--remote-debugging-port=0",
            "--ignore-certificate-errors",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = devtools_port(profile, browser)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        target = next(t for t in targets if t.get("type") == "page")
        page = Page(target["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Network.enable")
        page.call("Log.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1400, deviceScaleFactor=1, mobile=False)
        seen = {}

        page.call("Page.navigate", url=f"{base}/ui/")
        page.loaded_at("/ui/login")
        seen["login_path"] = page.js("location.pathname")
        sign_in(page, token)
        page.wait("htmx to load", "typeof htmx === 'object'")
        seen["overview_text"] = page.js("document.body.innerText")
        # One htmx refresh of a section (every 5 s), answered with the cookie.
        page.js("window.swaps = 0; document.body.addEventListener('htmx:afterSwap', () => window.swaps++)")
        seen["htmx_swaps"] = page.wait("an htmx refresh", "window.swaps", within=15.0)
        seen["overview_screenshot"] = screenshot(page, out_dir, "overview.png")

        page.call("Page.navigate", url=f"{base}/ui/services/{service}")
        page.loaded_at(f"/ui/services/{service}")
        seen["service_text"] = page.js("document.body.innerText")
        seen["charts"] = page.js("document.querySelectorAll('svg.chart').length")
        seen["chart_lines"] = page.js("document.querySelectorAll('svg.chart path.series').length")
        seen["screenshot"] = screenshot(page, out_dir, "service.png")
        # What the pages loaded and complained about (before the 401s that follow on purpose).
        seen["requested"] = sorted(
            {e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"}
        )
        seen["console_errors"] = [
            e["params"]["entry"]["text"]
            for e in page.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"
        ] + [
            e["params"]["exceptionDetails"].get("text", "")
            for e in page.events
            if e["method"] == "Runtime.exceptionThrown"
        ]
        # Log out: the cookie is gone, /ui/ goes back to the login page.
        page.js("document.querySelector('a.logout').click()")
        page.loaded_at("/ui/login")
        page.call("Page.navigate", url=f"{base}/ui/")
        page.loaded_at("/ui/login")
        seen["after_logout"] = page.js("location.pathname")
        # Signed in again, the cookie lost: the next refresh (401 + HX-Redirect) goes to the login page.
        sign_in(page, token)
        page.call("Network.clearBrowserCookies")
        page.loaded_at("/ui/login", within=15.0)
        seen["after_cookie_lost"] = page.js("location.pathname")
        return seen
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()


def main():
    chromium, base, token, service, out_dir = sys.argv[1:6]
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(240)
    with tempfile.TemporaryDirectory(prefix="holdfast-chromium-") as profile:
        print(json.dumps(session(chromium, base, token, service, out_dir, profile)))


if __name__ == "__main__":
    main()
