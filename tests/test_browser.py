"""The public log as a person sees it: real headless Chromium (Debian's) against the service on 127.0.0.1.

Screenshots of the main pages are saved under test-output/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import LedgerRepo, SshKey, instruction
from servers import ROOT

pytestmark = pytest.mark.slow
OUTPUT = ROOT / "test-output"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str:
    found = os.environ.get("OPOS_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("google-chrome")
    if not found:
        message = "Debian's chromium is not installed (./dev.sh test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def site(ledger_repo: LedgerRepo, keys: dict[str, SshKey], start_service: Any) -> Any:
    import datetime as dt

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def window(a: int, b: int) -> str:
        start, end = now + dt.timedelta(days=a), now + dt.timedelta(days=b)
        return f"\n  start: {start:%Y-%m-%dT%H:%M:%SZ}\n  end: {end:%Y-%m-%dT%H:%M:%SZ}"

    ledger_repo.write("ledger/instructions/ir-news.yaml", instruction(
        "ir-news", title="Measure Persian news sites", window=window(-3, 4),
        inputs="\n  - https://www.bbc.com/persian\n  - https://www.radiofarda.com/",
        target="\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 5"))  # fmt: skip
    ledger_repo.commit("Measure Persian news sites", keys["alice"])
    ledger_repo.write("ledger/instructions/ru-telegram.yaml", instruction(
        "ru-telegram", kind="schedule", test="telegram", inputs=None, every="6h", title="Telegram every six hours",
        target="\n  countries: [RU]", window=window(-2, 5)))  # fmt: skip
    ledger_repo.commit("Telegram in Russia", keys["alice"])
    ledger_repo.write("ledger/instructions/ir-news.yaml", instruction(
        "ir-news", title="Measure Persian news sites", window=window(-3, 4),
        inputs="\n  - https://www.bbc.com/persian\n  - https://www.radiofarda.com/\n  - https://www.iranintl.com/",
        target="\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 5"))  # fmt: skip
    ledger_repo.commit("Add Iran International", keys["alice"])
    service = start_service(
        str(ledger_repo.path), workers=2, commit_url="https://github.com/ooni/ledger/commit/{commit}"
    )
    service.wait_for(lambda: service.served_commit() == ledger_repo.head())
    return service


def shoot(page: Any, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def test_a_person_reads_the_log_on_a_phone(browser: Any, site: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or ""))
    page.goto(site.url + "/log")
    assert page.title() == "OPOS log"
    cards = page.locator("article.event")
    assert cards.count() == 5  # ir-news added and changed, ru-telegram added, first-one added, alice may sign
    assert page.locator("article.event").first.locator(".action").inner_text().lower() == "changed"
    shoot(page, "log-phone")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page must not scroll sideways on a phone"
    page.fill("input[name=country]", "RU")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "country=RU" in page.url
    names = page.locator("article.event .name").all_inner_texts()
    assert names == ["ru-telegram"]
    shoot(page, "log-filtered")
    page.click("text=ru-telegram")
    page.wait_for_load_state()
    assert page.url.endswith("/log/ru-telegram")
    assert "Telegram every six hours" in page.locator("main").inner_text()
    assert hosts == {"127.0.0.1"}, hosts  # nothing from a third-party host
    context.close()


def test_an_instruction_page_shows_its_history_and_diffs(browser: Any, site: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site.url + "/log/ir-news")
    text = page.locator("main").inner_text()
    assert page.locator("article.event").count() == 2
    diff = page.locator("table.diff")
    assert diff.count() == 1 and "inputs" in diff.inner_text() and "iranintl" in diff.inner_text()
    link = page.locator("article.event a[href^='https://github.com/ooni/ledger/commit/']").first
    assert len(link.inner_text()) == 12 and link.inner_text() in link.get_attribute("href")
    assert "at most 5 probes" in text and "AS197207" in text
    shoot(page, "instruction")
    page.close()


def test_the_log_reads_without_javascript(browser: Any, site: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(site.url + "/log?country=IR&network=AS197207")
    assert sorted(set(page.locator("article.event .name").all_inner_texts())) == ["first-one", "ir-news"]
    context.close()


def test_the_browser_is_a_real_chromium(browser: Any) -> None:
    version = subprocess.run([chromium_path(), "--version"], capture_output=True, text=True).stdout
    assert ("Chromium" in version or "Chrome" in version) and browser.version


@pytest.mark.parametrize("width", [390, 1280])
def test_pages_for_people(browser: Any, site: Any, width: int) -> None:
    """Dates and durations in words, country names, the status, and errors as pages with the form again."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(site.url + "/log?country=ir&network=as%20197207")  # lower case, and a space: taken as IR, AS197207
    text = page.locator("main").inner_text()
    assert "Iran (IR)" in text and " UTC" in text and "T00:" not in text.replace("datetime", "")
    assert page.locator("article.event .name").count() >= 1
    shoot(page, f"pages-log-{width}")
    page.goto(site.url + "/log?country=RU")
    assert "every 6 hours" in page.locator("main").inner_text() and ">21600<" not in page.content()
    page.goto(site.url + "/log/ir-news")
    status = page.locator("p.status").inner_text()
    assert status.startswith("Active until ") and status.endswith(" UTC")
    shoot(page, f"pages-instruction-{width}")
    answer = page.goto(site.url + "/log/nope")
    assert answer is not None and answer.status == 404
    assert page.locator("p.error").inner_text().startswith("There is no instruction 'nope'")
    assert page.locator("form.filters").count() == 1  # the form again, to look for it
    answer = page.goto(site.url + "/log?network=AS19720x")
    assert answer is not None and answer.status == 400 and "network" in page.locator("p.error").inner_text()
    assert page.locator("input[name=network]").input_value() == "AS19720x"  # what was typed, to correct
    shoot(page, f"pages-error-{width}")
    for moment in page.locator("time").all()[:3]:  # a date never breaks mid-token
        assert moment.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.close()
