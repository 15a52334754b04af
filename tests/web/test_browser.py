"""The web view in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium) beside a running synthetic stream: frames arrive, a click on "hallucination" in the
gallery lands in OUT/review.jsonl, and neither a closed browser nor one that stops reading
slows the pipeline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.stream_helpers import REPO, env, free_ports, guard_leftovers, wait_for

pytestmark = pytest.mark.slow

INSTALL = "apt-get install chromium chromium-driver (Debian), then pip install selenium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FPS, FRAMES = 8, 320


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is not installed: {INSTALL}")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not os.path.exists(CHROMEDRIVER):
        pytest.skip(f"no chromium / chromedriver on this machine: {INSTALL}")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _stalled_reader(port: int) -> socket.socket:
    """A client that asks for the event stream and never reads a byte of it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    return sock


def test_the_page_shows_live_frames_and_a_click_writes_the_review(tmp_path: Path) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    out, start = tmp_path / "out", time.time()
    [port] = free_ports(1)
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--source", f"synth:frames={FRAMES}", "--fps", str(FPS),
         "--mode", "live", "--filter", str(REPO / "pipeline/assets/filters/ghostbox-street-n.filter.safetensors"),
         "--out", str(out), "--web", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=REPO)
    stalled = None
    try:
        assert wait_for(lambda: (tmp_path / "run.log").read_text().count("web view: http") == 1, 60)
        stalled = _stalled_reader(port)
        driver.get(f"http://127.0.0.1:{port}/")
        # the gallery re-renders as events arrive: an element found a moment ago may be gone; look again
        wait = WebDriverWait(driver, 60, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException])
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('img.frame'); return i && i.complete && i.naturalWidth > 0"))
        first_seq = int(driver.find_element(By.CSS_SELECTOR, "img.frame").get_attribute("data-seq"))
        wait.until(lambda d: int(d.find_element(By.CSS_SELECTOR, "img.frame").get_attribute("data-seq")) > first_seq)
        # the "all" tab: a track whose verdict changes stays on it
        driver.find_element(By.CSS_SELECTOR, '#tabs button[data-which="all"]').click()
        button = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".track button.hallucination"))[0]
        key = driver.execute_script("return arguments[0].closest('.track').dataset.key", button)
        button.click()
        # the POST's reply and the gallery's next refresh say the same thing
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'.track[data-key="{key}"] .answer').text
                   == "saved: hallucination")
        driver.save_screenshot(str(tmp_path / "web-view.png"))
        driver.refresh()  # a new page learns the answer from the server
        driver.find_element(By.CSS_SELECTOR, '#tabs button[data-which="all"]').click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'.track[data-key="{key}"] .answer').text
                   == "saved: hallucination")
        review = [json.loads(line) for line in (out / "review.jsonl").read_text().splitlines()]
        stream, track = key.rsplit("/", 1)
        assert [(r["stream"], r["track_id"], r["answer"]) for r in review] == [(stream, int(track), "hallucination")]
        assert review[0]["crops"] and all((out / "tracks" / c).is_file() for c in review[0]["crops"])
    finally:
        driver.quit()  # a browser closed mid-run: the stream goes on
    try:
        proc.wait(timeout=FRAMES / FPS + 60)
        summary = json.loads((out / "summary.json").read_text())
        # neither the closed browser nor the client that never reads held the stream back
        assert proc.returncode == 0 and summary["status"] == "complete", (tmp_path / "run.log").read_text()[-2000:]
        assert summary["frames"] + summary["dropped"] >= FRAMES - 2 and summary["dropped"] <= 0.05 * FRAMES
        assert summary["fps"] >= 0.9 * FPS, summary["fps"]
    finally:
        if stalled is not None:
            stalled.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        log.close()
        guard_leftovers(start)
