"""The page at ``/`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by selenium; ``make browser-deps`` installs them): upload a photo, see the overlay and
the table, move the score slider, download the JSON.

``D2SEG_SERVE_SCREENSHOT=path.png`` also saves the screenshot there (docs/serve_page.png is
made so).
"""

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from d2seg.serving import create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):  # make test installs them
        pytest.fail("no /usr/bin/chromium or /usr/bin/chromedriver; fix: make browser-deps")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(0.1)
    return value


def test_upload_shows_overlay_table_and_slider_refilters(balloon_run, serve, browser, tmp_path):
    from selenium.webdriver.common.by import By

    photo = sorted(balloon_run["images"].glob("*.jpg"))[0]
    with serve(create_app(balloon_run["run"])) as url:
        browser.get(f"{url}/")
        _wait(lambda: "balloon" in browser.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(photo))
        status = browser.find_element(By.ID, "status")
        _wait(lambda: "instance(s)" in status.text)
        found = int(status.text.split(": ")[1].split(" ")[0])
        assert found > 0, status.text
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        assert len(rows) == found
        assert {r.find_element(By.CSS_SELECTOR, "td.class").text for r in rows} == {"balloon"}
        # The overlay is the photo with the masks tinted in: same size, different pixels.
        changed = browser.execute_script("""
            const canvas = document.getElementById('overlay');
            const image = document.getElementById('original');
            const plain = document.createElement('canvas');
            plain.width = image.naturalWidth; plain.height = image.naturalHeight;
            plain.getContext('2d').drawImage(image, 0, 0);
            const a = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const b = plain.getContext('2d').getImageData(0, 0, plain.width, plain.height).data;
            let n = 0; for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
            return [canvas.width, canvas.height, n];""")
        assert changed[:2] == [128, 96] and changed[2] > 100, changed
        shot = browser.get_screenshot_as_png()
        # The slider re-filters without a new upload: above the best score, nothing is listed.
        scores = sorted(float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows)
        browser.execute_script("""
            const s = document.getElementById('threshold'); s.value = arguments[0];
            s.dispatchEvent(new Event('input'));""", min(1.0, scores[-1] + 0.01))
        assert browser.find_element(By.CSS_SELECTOR, "#results tbody").text == \
            "nothing above the threshold"
        lowest = math.floor(scores[0] * 100) / 100  # the slider moves in steps of 0.01
        browser.execute_script("""
            const s = document.getElementById('threshold'); s.value = arguments[0];
            s.dispatchEvent(new Event('input'));""", lowest)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == found
        browser.find_element(By.ID, "download").click()
        saved = _wait(lambda: list(tmp_path.glob("*.predictions.json")))
        downloaded = json.loads(_wait(lambda: saved[0].read_text() or None))
    assert len(downloaded["instances"]) == found
    assert downloaded["score_threshold"] == pytest.approx(lowest)
    (tmp_path / "serve_page.png").write_bytes(shot)
    if os.environ.get("D2SEG_SERVE_SCREENSHOT"):
        shutil.copy(tmp_path / "serve_page.png", os.environ["D2SEG_SERVE_SCREENSHOT"])


def test_a_semantic_model_shows_its_class_areas(car_run, serve, browser):
    import httpx
    from selenium.webdriver.common.by import By

    photo = sorted(car_run["images"].iterdir())[0]
    with serve(create_app(car_run["run"])) as url:
        answer = httpx.post(f"{url}/v1/predict", files={"file": photo.open("rb")},
                            timeout=60).json()
        browser.get(f"{url}/")
        assert answer["model"]["classes"] == ["background", "object"]  # the masks' label
        _wait(lambda: "object" in browser.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(photo))
        _wait(lambda: "class(es)" in browser.find_element(By.ID, "status").text)
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
        listed = [(r.find_element(By.CSS_SELECTOR, "td.class").text,
                   int(r.find_elements(By.TAG_NAME, "td")[1].text)) for r in rows]
        assert listed == [(c["name"], c["area"]) for c in answer["sem_seg"]["classes"]]
        assert sum(area for _, area in listed) == 64 * 96  # every pixel has one class
        size = browser.execute_script("""
            const canvas = document.getElementById('overlay');
            return [canvas.width, canvas.height];""")
        assert size == [96, 64]
