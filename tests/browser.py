"""Headless Chromium on MLflow's UI, shared by tests/test_browser.py and scripts/readme_screenshots.py: the driver
(Debian's chromium and chromium-driver, never a download), waiting for a page state, and the compare view with
one artifact selected for every run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@contextlib.contextmanager
def chromium(width: int = 1600, height: int = 1000) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''")


def screenshot(driver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def wait_for(driver, condition: Callable, what: str, timeout: float = 120, failed_shot: Path | None = None):
    """condition(driver)'s first truthy value within timeout; else AssertionError with the page's text (and a
    screenshot at failed_shot)."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d))
    except Exception:
        if failed_shot is not None:
            screenshot(driver, failed_shot)
        raise AssertionError(f"{what}: not seen within {timeout} s; page text:\n{page_text(driver)[:3000]}") from None


def compare_artifact(driver, base: str, experiment_id: str, run_ids: list[str], artifact: str, timeout: float = 60,
                     failed_shot: Path | None = None) -> list[str]:
    """Open MLflow's compare view of run_ids, select `artifact` (a PNG every run logged under that name) and wait
    until one loaded image per run shows; returns their sources."""
    from selenium.webdriver.common.by import By

    runs = json.dumps(run_ids).replace(" ", "")
    driver.get("about:blank")  # a new hash on the same page would keep the single-page app's previous runs
    driver.get(f"{base}/#/compare-runs?runs={runs}&experiments={json.dumps([experiment_id])}")
    wait_for(driver, lambda d: artifact in page_text(d), f"the common artifact {artifact}", failed_shot=failed_shot)
    for entry in driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{artifact}']"):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", entry)
        # selecting the file makes the compare view show it for every run, side by side

    def loaded(d):
        d.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        imgs = d.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0 &&"
            f" (i.src.includes('{artifact}') || i.src.startsWith('blob:'))).map(i => i.src)")
        return imgs if len(imgs) >= len(run_ids) else False

    return wait_for(driver, loaded, "a loaded image per run", timeout=timeout, failed_shot=failed_shot)
