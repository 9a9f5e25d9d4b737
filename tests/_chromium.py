"""Debian's Chromium for the browser tests: where it is and the flags this machine needs."""

import os
import shutil

CHROMIUM = os.environ.get("GW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Headless as root, and no background traffic: the network is closed here and in CI.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
