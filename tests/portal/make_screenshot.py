"""Regenerate the README's dashboard screenshot: ``python -m tests.portal.make_screenshot [docs/portal.png]``.

A 30-day backfill from the fal simulator, served by the real portal and photographed by headless Chromium.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from connector_sdk.host import Host
from connector_sdk.models import floor_hour, utcnow
from connector_sdk.portal.app import create_app
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import fal_plugins
from tests.portal.conftest import CHROMIUM_FLAGS, served


def main(out: Path) -> int:
    """Write the screenshot to ``out``; returns its size in bytes."""
    from playwright.sync_api import sync_playwright

    with FalSimulator(now=floor_hour(utcnow()), seed=2026) as sim, tempfile.TemporaryDirectory() as home:
        key = sim.add_account("acme-ai", n_keys=3, n_models=6)
        with Host.open(Path(home), store_url="", plugins=fal_plugins(), clock=lambda: sim.now) as host:
            host.connect("fal", "fal-prod", {"api_key": key, "base_url": sim.base_url, "backfill_days": 30})
            sync_now(host, "fal-prod")
            with served(create_app(host)) as url, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(url + "/connections/fal-prod")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
    return out.stat().st_size


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/portal.png")
    print(f"{target}: {main(target) // 1024} KB")
