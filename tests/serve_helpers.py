"""Helpers for the `t2i serve` tests and scripts/serve_screenshot.py: start the server, drive Debian's chromium.

The browser is the system's (/usr/bin/chromium + /usr/bin/chromedriver, Debian packages chromium and chromium-driver,
installed by scripts/test.sh); nothing is ever downloaded (SE_OFFLINE stops Selenium Manager from looking).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The closed network makes chromium's background services hang on start-up; these flags keep it offline and quick.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def browser_missing():
    """None when chromium, chromedriver and selenium are there, else what is missing (a sentence)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.isfile(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium Python package")
    return None if not missing else ("missing: " + ", ".join(missing) +
                                     " (bash scripts/test.sh installs them: apt-get install chromium chromium-driver)")


class Chromium:
    """A headless chromium under selenium with a fresh profile; use as a context manager (quits, removes the profile)."""

    def __init__(self, width=1280, height=1000):
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a browser or driver
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="t2i-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))

    def __enter__(self):
        return self.driver

    def __exit__(self, *exc):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


class Server:
    """`python -m t2icli serve --port 0 ARGS...` in a subprocess; .url once it listens. A context manager (stops it).

    Its stderr is collected in .log (a thread drains it, so a chatty server never blocks on a full pipe)."""

    def __init__(self, *args, timeout=180):
        self.proc = subprocess.Popen([sys.executable, "-m", "t2icli", "serve", "--port", "0", *map(str, args)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log, self.url = [], None
        ready = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"open (http://\S+/)", line)
                if m and self.url is None:
                    self.url = m.group(1)
                    ready.set()
            ready.set()  # the process ended

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError("t2i serve did not start:\n" + "".join(self.log))
        deadline = time.time() + 30  # the line is printed just before uvicorn starts accepting
        while True:
            try:
                urllib.request.urlopen(self.url + "api/model", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("t2i serve does not answer:\n" + "".join(self.log)) from None
                time.sleep(0.2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
