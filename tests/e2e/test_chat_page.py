"""The chat page flintd serves at GET / (server/web/), driven like a person would: headless
Chromium through Selenium asks a question, watches the answer stream in, stops one, and
enters an API key. Needs Debian's chromium and chromium-driver (scripts/install-deps.sh);
skipped without them. FLINT_UPDATE_SCREENSHOT=1 also saves docs/chat-page.png."""
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

from flintd_harness import FLINTD, REPO, chat, pb, run, scaled

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("the chat page test needs chromium and chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -r tests/e2e/requirements.txt")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SCREENSHOT = REPO / "docs/chat-page.png"
QUESTION = "Write a short poem about the sea."
MAX_TOKENS = 48
FINISHED = ("done", "stopped", "error")


@pytest.fixture(scope="module")
def base_url(server):
    if server.http_url is None:
        pytest.skip("this flintd has no HTTP API (--http-port)")
    return server.http_url


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,760", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(arg)
    # The system chromedriver, so Selenium never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def stats(browser):
    return browser.execute_script("return window.flintStats")


def last_answer(browser):
    return browser.execute_script(
        "const a = document.querySelectorAll('.msg.assistant .content'); return a.length ? a[a.length - 1].textContent : ''")


def open_page(browser, url, temperature=0.0, max_tokens=MAX_TOKENS):
    """Loads the page, waits for the model name, and sets the sampling settings through the form."""
    browser.get(url + "/")
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "model").text not in ("", "connecting…"))
    configure(browser, temperature, max_tokens)


def configure(browser, temperature, max_tokens):
    browser.find_element(By.ID, "settings-toggle").click()
    browser.execute_script(
        "const t = document.getElementById('temperature'); t.value = arguments[0];"
        "t.dispatchEvent(new Event('input'));", temperature)
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    browser.find_element(By.ID, "settings-toggle").click()


def ask(browser, text):
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()  # a failed turn puts its question back here
    prompt.send_keys(text)
    prompt.send_keys(Keys.ENTER)


def wait_finished(browser, timeout=scaled(90)):
    WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda b: stats(b)["state"] in FINISHED)
    return stats(browser)


def test_page_is_served_whole_and_loads_nothing_else(base_url, browser):
    with urllib.request.urlopen(base_url + "/", timeout=10) as res:
        assert res.status == 200
        assert res.headers["Content-Type"].replace(" ", "").lower() == "text/html;charset=utf-8"
        html = res.read().decode()
    assert "<style>" in html and "<script>" in html, "chat.css and chat.js should be inlined"
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", html), \
        "the page must not load anything from elsewhere"
    open_page(browser, base_url)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(r.startswith(base_url + "/") or r.startswith("data:") for r in resources), resources
    assert browser.find_element(By.ID, "model").get_attribute("class") != "model error"


def test_answer_streams_in_with_speed_and_matches_grpc(base_url, browser, stub):
    open_page(browser, base_url)
    ask(browser, QUESTION)
    # Sample the answer while it streams: it must be seen growing, not appear at once.
    seen = []
    end = time.monotonic() + scaled(90)
    while time.monotonic() < end:
        s = stats(browser)
        text = last_answer(browser)
        if s["state"] == "streaming" and text and (not seen or len(text) != seen[-1]):
            seen.append(len(text))
        if s["state"] in FINISHED:
            break
        time.sleep(0.02)
    s = wait_finished(browser)
    assert s["state"] == "done", s
    assert s["error"] is None
    assert len(seen) >= 2 and seen == sorted(seen), f"answer lengths seen while streaming: {seen}"
    assert s["contentChunks"] > 1, s
    assert s["completionTokens"] is not None, "no usage chunk (stream_options.include_usage)"
    assert s["tokensPerSecond"] > 0 and s["timeToFirstTokenMs"] > 0, s
    line = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant .stats")[-1].text
    assert re.search(r"\d+ tokens? · \d+\.\d tok/s · \d+\.\d\d s to first token", line), line

    # Greedy, same messages: the page shows what gRPC's Chat makes.
    expected = run(stub, chat(QUESTION, max_tokens=MAX_TOKENS, temperature=0.0))
    assert s["completionTokens"] == expected.finished.usage.completion_tokens
    history = browser.execute_script("return window.flintChat.history")
    assert history == [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": expected.text}]

    if os.environ.get("FLINT_UPDATE_SCREENSHOT") == "1":
        ask(browser, "What is the capital of France?")
        assert wait_finished(browser)["state"] == "done"
        browser.execute_script("document.activeElement.blur()")
        ActionChains(browser).move_to_element(browser.find_element(By.ID, "messages")).perform()  # no hover
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))


def test_stop_aborts_the_stream_and_the_server_frees_the_sequence(base_url, browser, stub):
    # Greedy: the default model's answer to this runs the whole 1000 tokens (flint-run --chat --temperature 0), so
    # the stream is still running when Stop is clicked. Sampled, it could end on its own between the check below
    # and the click (the Stop button then hidden: "element click intercepted").
    open_page(browser, base_url, temperature=0.0, max_tokens=1000)
    ask(browser, "Tell me a very long story about a lighthouse keeper.")
    WebDriverWait(browser, scaled(60), poll_frequency=0.05).until(
        lambda b: stats(b)["contentChunks"] >= 2 or stats(b)["state"] in FINISHED)
    assert stats(browser)["state"] == "streaming", stats(browser)
    browser.find_element(By.ID, "stop").click()
    s = wait_finished(browser, timeout=scaled(10))
    assert s["state"] == "stopped", s
    assert browser.find_element(By.ID, "send").is_displayed()
    assert "stopped" in browser.find_elements(By.CSS_SELECTOR, ".msg.assistant .stats")[-1].text
    # The partial answer stays in the conversation.
    history = browser.execute_script("return window.flintChat.history")
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"]
    deadline = time.monotonic() + scaled(15)
    while True:
        server_stats = stub.GetServerStats(pb.GetServerStatsRequest(), timeout=5)
        if server_stats.num_running == 0 and server_stats.num_waiting == 0:
            break
        assert time.monotonic() < deadline, f"the sequence still runs after Stop: {server_stats}"
        time.sleep(0.1)
    # New chat empties the conversation.
    browser.find_element(By.ID, "new-chat").click()
    assert browser.execute_script("return window.flintChat.history") == []
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg")


def _has_flag(flag):
    out = subprocess.run([str(FLINTD), "--help"], capture_output=True, text=True, timeout=10)
    return flag in out.stdout + out.stderr


def test_api_key_is_asked_for_and_sent(fresh_server, browser):
    if not _has_flag("--api-key"):
        pytest.skip("this flintd has no --api-key")
    d = fresh_server("--api-key", "sekret-key", "--kv-cache-memory", "16MiB")
    if d.http_url is None:
        pytest.skip("this flintd has no HTTP API (--http-port)")
    browser.get(d.http_url + "/")
    key = browser.find_element(By.ID, "api-key")
    WebDriverWait(browser, 20).until(lambda b: key.is_displayed())
    configure(browser, temperature=0.0, max_tokens=8)
    key.send_keys("wrong")
    key.send_keys(Keys.ENTER)
    ask(browser, "Hi")
    s = wait_finished(browser)
    assert s["state"] == "error" and s["error"].startswith("401"), s
    assert key.is_displayed(), "a refused key should bring the key field back"
    key.clear()
    key.send_keys("sekret-key")
    key.send_keys(Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "model").text != "API key needed")
    ask(browser, "Hi")
    s = wait_finished(browser)
    assert s["state"] == "done" and s["contentChunks"] >= 1, s
