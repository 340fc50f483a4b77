#!/usr/bin/env python3
"""Drives the operator console in a real headless Chromium over the DevTools protocol.

Run by tests/tests/console_browser.rs against a node it started (and by hand:
`python3 tests/browser/console.py --help`). Logs in through the login form, reads every
page, revokes a key by clicking its form's button and checks the API then refuses the
key, and fails on any console message, uncaught exception, CSP violation or failed load.
Screenshots of each page go to --shots.

Standard library plus `websocket-client` (Debian: python3-websocket), which
scripts/setup.sh installs with chromium.
"""

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websocket

TIMEOUT_S = 20
BROWSER = None


class Browser:
    """One headless Chromium with one page, spoken to over its DevTools websocket."""

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="tessera-console-")
        args = [
            chromium, "--headless=new", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-sync",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            "--user-data-dir=" + self.profile, "--window-size=1280,900", "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root otherwise
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = self._devtools_port()
        deadline = time.time() + TIMEOUT_S
        target = None
        while target is None and time.time() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                target = next((t for t in json.load(r) if t.get("type") == "page"), None)
            if target is None:
                time.sleep(0.1)
        if target is None:
            raise RuntimeError("chromium opened no page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=TIMEOUT_S)
        self.next_id = 0
        self.events = []
        self.problems = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(domain + ".enable")

    def _devtools_port(self):
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                return int(found.group(1))
        raise RuntimeError("chromium did not print its DevTools address")

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == mine:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message):
        method, params = message.get("method"), message.get("params", {})
        self.events.append(method)
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.problems.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            self.problems.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            entry = params["entry"]
            self.problems.append(f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.problems.append("load failed: " + params.get("errorText", ""))

    def wait_for(self, event):
        """Waits for the next `event` (events seen before the wait do not count)."""
        self.events.clear()
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            self._event(json.loads(self.ws.recv()))
            if event in self.events:
                return
        raise RuntimeError(f"no {event} within {TIMEOUT_S} s")

    def goto(self, url):
        self.events.clear()
        self.call("Page.navigate", url=url)
        if "Page.loadEventFired" not in self.events:
            self.wait_for("Page.loadEventFired")

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click_and_load(self, selector):
        """Clicks the element `selector` (a form's button) and waits for the page it loads."""
        self.events.clear()
        found = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.click(); return true; }})()")
        if not found:
            raise AssertionError(f"nothing matches {selector} on {self.eval('location.href')}")
        if "Page.loadEventFired" not in self.events:
            self.wait_for("Page.loadEventFired")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"screenshot: {path}")

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def api_status(base, path, key):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def check(condition, what):
    if not condition:
        raise AssertionError(what + " (at " + str(BROWSER.eval("location.href")) + ": " + str(BROWSER.eval("document.body.innerText"))[:300] + ")" if BROWSER else what)
    print(f"ok: {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the node, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", required=True, help="an operator token of the node")
    parser.add_argument("--tenant", required=True, help="a tenant id with a key, usage and a quota")
    parser.add_argument("--key", required=True, help="a key of that tenant with the usage scope (revoked here)")
    parser.add_argument("--shots", required=True, help="directory for the screenshots")
    parser.add_argument("--members", type=int, default=1, help="other members the cluster page must list")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    base, tenant = args.base.rstrip("/"), args.tenant
    prefix = args.key.split("_")[1]
    usage_path = f"/admin/v1/usage?tenant={tenant}"
    check(api_status(base, usage_path, args.key) == 200, "the key works on the API before")

    global BROWSER
    browser = BROWSER = Browser(args.chromium)
    try:
        shot = lambda name: browser.screenshot(os.path.join(args.shots, name + ".png"))
        browser.goto(base + "/console/tenants")
        check(browser.eval("location.pathname") == "/console/login", "a page without a session leads to the login form")
        shot("1-login")
        browser.eval(f"document.querySelector('#login input[name=token]').value = {json.dumps(args.token)}")
        browser.click_and_load("#login button[type=submit]")
        check(browser.eval("location.pathname") == "/console/cluster", "logging in opens the cluster page")
        check(browser.eval("document.cookie") == "", "the session cookie is HttpOnly (invisible to scripts)")
        check(browser.eval("document.querySelectorAll('#members tbody tr[data-node]').length") == args.members, f"the cluster page lists {args.members} other member(s)")
        shot("2-cluster")

        browser.click_and_load("#nav-tenants")
        check(browser.eval("!!document.querySelector('#page-tenants')"), "the tenants page opens from the navigation")
        check(browser.eval(f"!!document.querySelector('a.tenant-link[href=\"/console/tenants/{tenant}\"]')"), "the tenant is listed")
        shot("3-tenants")
        browser.click_and_load(f"a.tenant-link[href=\"/console/tenants/{tenant}\"]")
        check(browser.eval("document.querySelector('#page-tenant').dataset.tenant") == tenant, "the tenant page opens from its link")
        check(browser.eval(f"!!document.querySelector('#keys tr[data-key-prefix=\"{prefix}\"] form.revoke-key')"), "the key is listed with a revoke form")
        check(browser.eval("document.querySelectorAll('#rights tbody tr').length") >= 1, "the tenant's quota shows its rights per node")
        check(browser.eval("document.querySelectorAll('#history tbody tr').length") >= 3, "the audit history is shown")
        shot("4-tenant")

        browser.goto(f"{base}/console/usage?tenant={tenant}")
        check(browser.eval("document.querySelectorAll('#usage-chart rect.bar').length") >= 1, "the usage chart is drawn")
        check(browser.eval("document.querySelector('#usage-chart').getBoundingClientRect().height") > 100, "the chart has a size on screen")
        check(browser.eval("document.querySelectorAll('#harvest tbody tr').length") == args.members + 1, "the harvest lists every node")
        shot("5-usage")

        browser.goto(f"{base}/console/cluster?tenant={tenant}")
        check(browser.eval("document.querySelectorAll('#rights tbody tr').length") >= 1, "the cluster page shows rights per node for a tenant")

        browser.goto(f"{base}/console/tenants/{tenant}")
        browser.click_and_load(f"#keys tr[data-key-prefix=\"{prefix}\"] form.revoke-key button")
        check("revoked" in browser.eval(f"document.querySelector('#keys tr[data-key-prefix=\"{prefix}\"] .key-state').textContent"), "the key shows as revoked")
        shot("6-revoked")
        check(api_status(base, usage_path, args.key) == 401, "the API refuses the revoked key")

        browser.click_and_load("#logout button")
        check(browser.eval("location.pathname") == "/console/login", "logging out returns to the login form")
        browser.goto(base + "/console/cluster")
        check(browser.eval("location.pathname") == "/console/login", "after logout the pages need a login again")

        # Drain the events still queued, then judge them.
        browser.eval("1")
        check(not browser.problems, "no console error, exception, CSP violation or failed load: " + "; ".join(browser.problems))
    finally:
        browser.close()
    print("console browser test: passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - any failure fails the test with its reason
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
