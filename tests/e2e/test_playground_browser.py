"""The playground page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium):
key, question, Send → the reply grows over several updates; Stop → the engine counts a cancelled request; a bad key
→ the error is shown in words; over the rate limit → the 429 and its Retry-After are shown. A screenshot taken
mid-stream goes to results/playground/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from services.common.settings import REPO_ROOT, Settings
from tests.conftest import engine_metric

pytestmark = pytest.mark.stack

SCREENSHOT = REPO_ROOT / "results" / "playground" / "playground-mid-stream.png"
CANCELLED = ("sluice_engine_requests_total", 'outcome="cancelled"')


@pytest.fixture()
def browser() -> Iterator:
    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if not driver_path or not chromium:
        pytest.skip("Chromium is not installed: `make test` installs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,860"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, timeout: float = 30.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting for the page")


def _enter_key(driver, key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key, Keys.TAB)  # leaving the field fires `change`: the page stores the key and loads models


def _set(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def _assistant_texts(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.turn.assistant .text')].map(e => e.textContent)")


def test_playground_streams_stops_and_shows_errors(stack: Settings, api_key: str, tenant_keys, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"http://{stack.host}:{stack.http_port}/")
    _enter_key(browser, api_key)
    _wait(lambda: stack.model_name in [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#model option")])
    assert browser.execute_script("return sessionStorage.getItem('sluice.apiKey')") == api_key
    assert browser.execute_script("return localStorage.length") == 0  # the key is kept for this tab only

    # The demo model answers in a sentence or two; so that there is a stream to watch and to stop, the page's chat
    # requests get `min_tokens` (an API extension the page does not send itself) added on their way out.
    browser.execute_script("""
        const send = window.fetch;
        window.fetch = (url, options) => {
          if (String(url).endsWith('/v1/chat/completions')) {
            const body = JSON.parse(options.body);
            body.min_tokens = body.max_tokens;
            options = {...options, body: JSON.stringify(body)};
          }
          return send(url, options);
        };""")

    # Key, question, Send: the reply grows over several updates, and the request id is shown with its trace command.
    _set(browser, "system", "You are a storyteller.")
    _set(browser, "max-tokens", "200")
    _set(browser, "message", "Tell me a long story about a lighthouse keeper and the sea.")
    browser.find_element(By.ID, "send").click()
    lengths: list[int] = []
    deadline = time.monotonic() + 120
    while browser.find_element(By.ID, "stop").is_enabled() or not lengths:
        assert time.monotonic() < deadline, f"the reply did not finish: {_assistant_texts(browser)}"
        texts = _assistant_texts(browser)
        current = len(texts[0]) if texts else 0
        if current and (not lengths or current != lengths[-1]):
            lengths.append(current)
            if len(lengths) == 3:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(SCREENSHOT))
        time.sleep(0.02)
    assert len(lengths) >= 3 and lengths == sorted(lengths), lengths  # text grew over several updates
    meta = browser.find_element(By.CSS_SELECTOR, ".turn.assistant .meta").text
    request_id = meta.split("request id ", 1)[1].split(" ", 1)[0]
    assert f"sluice trace {request_id}" in meta
    assert SCREENSHOT.stat().st_size > 10_000

    # A second turn (Enter sends it), stopped with Stop: the fetch is aborted and the engine cancels the generation.
    before = engine_metric(stack, *CANCELLED)
    _set(browser, "max-tokens", "500")
    browser.find_element(By.ID, "message").send_keys("Now tell it again, much longer.", Keys.ENTER)
    _wait(lambda: len(_assistant_texts(browser)) == 2 and _assistant_texts(browser)[1])
    browser.find_element(By.ID, "stop").click()
    _wait(lambda: engine_metric(stack, *CANCELLED) > before, timeout=15, step=0.1)
    assert "stopped" in browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .meta")[1].text
    assert browser.find_element(By.ID, "send").is_enabled()

    # A bad key: the error is shown plainly, on the key's status line and on a sent message.
    _enter_key(browser, "sk-sluice-not-a-real-key")
    _wait(lambda: "API key was refused (401)" in browser.find_element(By.ID, "status").text)
    _set(browser, "message", "Hello?")
    browser.find_element(By.ID, "send").click()
    error = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .error"))
    assert "API key was refused (401)" in error[-1].text

    # Over the key's rate limit (1 request a minute): the 429 is shown with its Retry-After.
    _enter_key(browser, tenant_keys("playground-limited", "enterprise", rpm=1))
    _wait(lambda: "model(s) available" in browser.find_element(By.ID, "status").text)
    _set(browser, "max-tokens", "4")
    for message in ("One.", "Two."):
        _wait(lambda: browser.find_element(By.ID, "send").is_enabled())
        _set(browser, "message", message)
        browser.find_element(By.ID, "send").click()
    limited = _wait(lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .error")
                             if "429" in e.text])
    assert "Rate limited (429)" in limited[0].text and "Retry after" in limited[0].text
