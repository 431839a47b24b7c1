"""The console in a real browser (headless Chromium) against a real hub and real runners:
upload -> start -> output -> kill; a thousand instances; the hub crashing while a page follows
an instance's output; a TCP hub's token; a phone-sized screen and the keyboard."""

from __future__ import annotations

import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from si.client import HubClient
from si.testing import HubProcess, python_package
from tests.console.conftest import COUNTER, COUNTING, ConsoleProcess
from tests.netutil import free_port

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

T = TypeVar("T")

IDLE = """
import asyncio
async def run(context, input):
    await asyncio.sleep(3600)
    yield 0
"""


def until(
    driver: WebDriver,
    check: Callable[[WebDriver], T | Literal[False] | None],
    timeout: float = 15,
) -> T:
    """Poll the page until ``check`` answers something true (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check(driver)
            if value:
                return value
        except Exception as exc:  # the element is not there yet, or was just replaced
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"the page did not get there in {timeout} s (last error: {last})")


def css(driver: WebDriver, selector: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, selector)


def shown(driver: WebDriver, selector: str) -> WebElement:
    """The element once it is displayed."""
    return until(driver, lambda d: css(d, selector).is_displayed() and css(d, selector))


def numbers_in(driver: WebDriver) -> list[int]:
    text = css(driver, "[data-stream=output]").text
    return [int(word) for word in re.findall(r"^\d+$", text, re.M)]


def counter_package(tmp_path: Path) -> Path:
    path = tmp_path / "counter.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in ("index.py", "package.json"):
            archive.add(COUNTER / name, arcname=name)
    return path


def test_upload_start_see_output_then_kill(
    browser: WebDriver, client: HubClient, console: ConsoleProcess, tmp_path: Path
) -> None:
    driver = browser
    driver.get(console.url)
    until(driver, lambda d: "connected" in css(d, "#hub-state").text)
    css(driver, "nav a[data-view=sequences]").click()
    upload = until(driver, lambda d: css(d, "[data-file]"))
    upload.send_keys(str(counter_package(tmp_path)))
    state = until(driver, lambda d: css(d, "[data-upload-state]").get_attribute("data-sequence"))
    assert float(css(driver, "[data-progress]").get_attribute("value") or 0) == 1
    start = until(driver, lambda d: css(d, f"tr[data-id='{state}'] button[data-act=start]"))
    start.click()
    until(driver, lambda d: css(d, "[data-start] [name=args]").is_displayed())
    css(driver, "[data-start] [name=args]").send_keys("1000 100000 0.02")
    css(driver, "[data-start] [name=appConfig]").send_keys('{"mode": "demo"}')
    Select(css(driver, "[data-start] [name=restart]")).select_by_visible_text("on-failure")
    css(driver, "[data-start] [name=memory]").send_keys("256")
    css(driver, "[data-start] button[type=submit]").click()
    until(driver, lambda d: d.current_url.split("#")[1].startswith("/instance/"))
    record = client.get_instance(driver.current_url.split("/instance/")[1])
    assert record["args"] == ["1000", "100000", "0.02"]
    assert record["appConfig"] == {"mode": "demo"}
    assert record["restartPolicy"]["restart"] == "on-failure"
    assert record["limits"]["memory"] == 256
    numbers = until(driver, lambda d: len(numbers_in(d)) >= 10 and numbers_in(d))
    assert numbers == list(range(1000, 1000 + len(numbers)))
    until(driver, lambda d: css(d, "[data-fact=status]").text == "running")
    css(driver, "[data-actions] button[data-act=kill]").click()
    notice = shown(driver, "[data-notice]")
    assert "has stopped" in notice.text
    assert css(driver, "[data-fact=status]").text in ("completed", "errored")
    assert until(driver, lambda d: css(d, "[data-state=output]").text == "ended")


def test_a_thousand_instances_are_listed_and_filtered(
    browser: WebDriver, hub: HubProcess, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package(IDLE))["id"]
    ids = [client.start_sequence(sequence, {})["id"] for _ in range(1000)]
    driver = browser
    driver.get(console.url)
    until(driver, lambda d: css(d, "[data-count]").text == "(1000 of 1000)", timeout=30)
    rows = driver.find_elements(By.CSS_SELECTOR, "tbody[data-rows] tr")
    assert len(rows) == 1000
    assert {row.get_attribute("data-id") for row in rows} == set(ids)
    milliseconds = driver.execute_script("return window.siConsole.lastRenderMs")
    print(f"\n1,000-instance list: last render {milliseconds:.1f} ms")  # bench/console.py times it
    css(driver, "[data-filter]").send_keys(ids[500][:13])
    until(driver, lambda d: css(d, "[data-count]").text == "(1 of 1000)")
    (visible,) = [r for r in rows if r.is_displayed()]
    assert visible.get_attribute("data-id") == ids[500]


def test_the_hub_crashes_while_the_page_follows_output_and_nothing_repeats(
    browser: WebDriver, hub: HubProcess, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package(COUNTING))["id"]
    instance_id = client.start_sequence(sequence, {})["id"]
    driver = browser
    driver.get(console.url)
    driver.get(f"{console.base}/console/#/instance/{instance_id}")
    until(driver, lambda d: len(numbers_in(d)) >= 30)
    hub.crash()
    banner = shown(driver, "#banner")
    assert "not answering" in banner.text
    before = len(numbers_in(driver))
    time.sleep(1)
    hub.start()
    until(driver, lambda d: "connected" in css(d, "#hub-state").text, timeout=20)
    until(driver, lambda d: len(numbers_in(d)) >= before + 100, timeout=20)
    numbers = numbers_in(driver)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap, no repeat
    assert numbers[0] == 0
    assert not css(driver, "#banner").is_displayed()


def test_a_tcp_hub_asks_for_a_token_and_says_when_one_is_wrong(
    browser: WebDriver, tmp_path: Path
) -> None:
    port = free_port()
    hub = HubProcess(tmp_path / "tcp", "--port", str(port)).start()
    try:
        driver = browser
        driver.get(f"http://127.0.0.1:{port}/")
        login = shown(driver, "#login")
        field = css(driver, "#login-token")
        field.send_keys("sit_wrong", Keys.ENTER)
        until(driver, lambda d: "refused the token" in css(d, "#login-reason").text)
        field.clear()
        field.send_keys((hub.home / "admin.token").read_text().strip(), Keys.ENTER)
        until(driver, lambda d: "connected" in css(d, "#hub-state").text)
        assert not login.is_displayed()
        assert css(driver, "[data-count]").text == "(0 of 0)"
    finally:
        hub.close()


def test_a_stopped_instance_and_an_unknown_one_say_so(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package("async def run(context, input):\n    yield 1\n"))
    instance_id = client.start_sequence(sequence["id"], {})["id"]
    driver = browser
    driver.get(console.url)
    driver.get(f"{console.base}/console/#/instance/{instance_id}")
    notice = shown(driver, "[data-notice]")
    assert "has stopped (completed" in notice.text
    driver.get(f"{console.base}/console/#/instance/no-such-instance")
    gone = shown(driver, "[data-notice]")
    assert "not on this hub" in gone.text


def test_a_phone_screen_fits_and_the_keyboard_reaches_everything(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package(IDLE))["id"]
    instance_id = client.start_sequence(sequence, {})["id"]
    driver = browser
    driver.set_window_size(360, 740)
    driver.get(console.url)
    until(driver, lambda d: css(d, "[data-count]").text == "(1 of 1)")
    for selector in ("html", ".scroll"):  # nothing sticks out sideways, nor scrolls
        overflow: Any = driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e.scrollWidth - e.clientWidth",
            selector,
        )
        assert overflow <= 0, selector
    driver.get(f"{console.base}/console/#/instance/{instance_id}")
    kill = until(driver, lambda d: css(d, "[data-actions] button[data-act=kill]"))
    assert kill.is_displayed()  # the row's buttons are on the instance's page
    driver.set_window_size(1280, 800)
    driver.get(f"{console.base}/console/#/instances")
    until(driver, lambda d: css(d, "[data-count]").text == "(1 of 1)")
    css(driver, "body").send_keys(Keys.TAB)
    reached = []
    for _ in range(25):
        active = driver.switch_to.active_element
        reached.append((active.tag_name, active.text or active.get_attribute("data-act") or ""))
        active.send_keys(Keys.TAB)
    assert ("a", "Skip to content") in reached
    assert ("a", "Sequences") in reached
    kinds = {text for tag, text in reached if tag == "button"}
    assert {"Stop", "Kill", "Restart"} <= kinds


ECHO = """
async def run(context, input):
    context.on("ping", lambda message: context.emit("pong", message))
    async for line in input:
        yield line.upper()
"""


def test_the_instance_page_sends_input_and_events_pauses_and_restarts(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package(ECHO))["id"]
    settings = {"appConfig": {"k": 1}, "restart": "always", "limits": {"memory": 300}}
    instance_id = client.start_sequence(sequence, settings)["id"]
    driver = browser
    driver.get(console.url)
    driver.get(f"{console.base}/console/#/instance/{instance_id}")
    until(driver, lambda d: css(d, "[data-fact=status]").text == "running")
    output = css(driver, "[data-stream=output]")
    area = css(driver, "[data-input] textarea")
    area.send_keys("hello")
    css(driver, "[data-input] button[value=input]").click()
    until(driver, lambda d: "HELLO" in output.text)
    # Paused, the page is not a reader; resumed, it goes on from the next byte, no repeat.
    css(driver, "[data-pause=output]").click()
    until(driver, lambda d: "paused at byte 6" in css(d, "[data-state=output]").text)
    area.send_keys("world")
    css(driver, "[data-input] button[value=input]").click()
    until(driver, lambda d: "sent" in css(d, "[data-input-state]").text)
    css(driver, "[data-pause=output]").click()
    until(driver, lambda d: output.text.split() == ["HELLO", "WORLD"])
    css(driver, "[data-event] [name=eventName]").send_keys("ping")
    css(driver, "[data-event] [name=message]").send_keys('{"n": 7}')
    css(driver, "[data-event] button[type=submit]").click()
    events = css(driver, "[data-events]")
    until(driver, lambda d: "pong" in events.text)
    assert '→ sent ping {"n":7}' in events.text
    assert '← received pong {"n":7}' in events.text
    pid_before = client.get_instance(instance_id)["pid"]
    css(driver, "[data-actions] button[data-act=restart]").click()

    def restarted(_: WebDriver) -> dict[str, Any] | None:
        record = client.get_instance(instance_id)  # the same id again
        return record if record["status"] == "running" and record["pid"] != pid_before else None

    record = until(driver, restarted)
    assert record["appConfig"] == {"k": 1}  # and the same settings
    assert record["restartPolicy"]["restart"] == "always"
    assert record["limits"]["memory"] == 300


def test_a_package_dropped_on_the_page_is_uploaded(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    driver = browser
    driver.get(console.url)
    driver.get(f"{console.base}/console/#/sequences")
    until(driver, lambda d: css(d, "[data-drop]"))
    package = list(python_package(IDLE))
    driver.execute_script(
        "const file = new File([new Uint8Array(arguments[0])], 'idle.tar.gz');"
        "const data = new DataTransfer(); data.items.add(file);"
        "const zone = document.querySelector('[data-drop]');"
        "zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));",
        package,
    )
    state = css(driver, "[data-upload-state]")
    sequence_id = until(driver, lambda d: state.get_attribute("data-sequence"))
    assert [s["id"] for s in client.list_sequences()] == [sequence_id]
    # A file that is no package is refused with the hub's reason, on the page.
    driver.execute_script(
        "const data = new DataTransfer(); data.items.add(new File(['no'], 'x.tar.gz'));"
        "document.querySelector('[data-drop]').dispatchEvent("
        "new DragEvent('drop', {dataTransfer: data, bubbles: true}));"
    )
    until(driver, lambda d: "refused" in state.text)
    assert "not a sequence package" in state.text


def test_stop_from_the_list_and_delete_a_sequence(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package(IDLE))["id"]
    instance_id = client.start_sequence(sequence, {})["id"]
    driver = browser
    driver.get(console.url)
    status = until(driver, lambda d: css(d, f"tr[data-id='{instance_id}'] [data-col=status]"))
    until(driver, lambda d: status.text == "running")
    css(driver, f"tr[data-id='{instance_id}'] button[data-act=stop]").click()
    until(driver, lambda d: status.text == "completed", timeout=20)
    stop = css(driver, f"tr[data-id='{instance_id}'] button[data-act=stop]")
    until(driver, lambda d: not stop.is_enabled())  # nothing left to stop
    driver.get(f"{console.base}/console/#/sequences")
    until(driver, lambda d: css(d, f"tr[data-id='{sequence}'] button[data-act=delete]")).click()
    driver.switch_to.alert.accept()
    until(driver, lambda d: not client.list_sequences())
    until(driver, lambda d: css(d, "[data-empty]").is_displayed())


def test_a_topic_is_listed_and_peeked_without_being_consumed(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    client.send_topic("orders", b'{"order":1}\n{"order":2}\n', "application/x-ndjson")
    driver = browser
    driver.get(console.url)
    driver.get(f"{console.base}/console/#/topics")
    row = until(driver, lambda d: css(d, "tr[data-id=orders]"))
    assert row.text.split()[:4] == ["orders", "application/x-ndjson", "0", "0"]
    assert row.text.endswith("24 B Peek")
    css(driver, "tr[data-id=orders] button[data-act=peek]").click()
    peek = css(driver, "[data-peek-text]")
    until(driver, lambda d: peek.text.split() == ['{"order":1}', '{"order":2}'])
    time.sleep(1.2)  # a feed line later, the depth is the same: the peek consumed nothing
    assert css(driver, "tr[data-id=orders]").text.endswith("24 B Peek")


def test_the_page_does_not_poll(
    browser: WebDriver, client: HubClient, console: ConsoleProcess
) -> None:
    sequence = client.send_sequence(python_package(IDLE))["id"]
    instance_id = client.start_sequence(sequence, {})["id"]
    driver = browser
    driver.get(console.url)
    driver.get(f"{console.base}/console/#/instance/{instance_id}")
    until(driver, lambda d: css(d, "[data-fact=status]").text == "running")
    count = "return performance.getEntriesByType('resource').length"
    time.sleep(1)
    before = driver.execute_script(count)
    age = css(driver, "[data-fact=age]").text
    time.sleep(4)
    # More feed lines came in on the open response (the age moved on), and not one new request
    # was made: a poll, once answered, would be a resource entry of its own.
    assert driver.execute_script(count) == before
    assert css(driver, "[data-fact=age]").text != age
