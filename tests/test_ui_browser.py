"""The product in Airflow 3's UI, in a real browser: the trigger form and its refusals, and the
connection form of the product's connection type.

One api-server for the whole module, run from a virtualenv where the built wheel is installed
(so the UI knows the provider's connection type), over SQLite metadata where
``airflow dags reserialize`` stored the DAG. No scheduler runs, so a triggered run stays queued
and nothing is collected: the test is about what the UI accepts, refuses and says.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) through selenium.
Screenshots go to the test's output folder and are copied to tests/output/ui/.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pytest
import requests
from e2e_harness import Service, free_port, stop_all
from fixtures_provider import ROOT, provider_env

from github_collector import connection_form
from github_collector.hook import parse_settings
from github_collector.plan import BATCH_MAX, BATCH_MIN, params_schema

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        int(version("apache-airflow").split(".")[0]) < 3,
        reason="drives Airflow 3's React UI; Airflow 2.11's Flask UI is not covered by a browser test",
    ),
]

DAG_ID = "github_repo_users"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
STABLE_SHOTS = ROOT / "tests" / "output" / "ui"
USER = "admin"
SCHEMA = params_schema()


@dataclass
class AirflowUI:
    base: str
    password: str
    env: dict
    python: Path
    log: Path
    _token: str = field(default="", repr=False)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        if not self._token:
            resp = requests.post(
                f"{self.base}/auth/token", json={"username": USER, "password": self.password}, timeout=30
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        headers = {"Authorization": f"Bearer {self._token}"}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def runs(self) -> dict[str, dict]:
        resp = self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")
        resp.raise_for_status()
        return {r["dag_run_id"]: r for r in resp.json()["dag_runs"]}

    def paused(self) -> bool:
        resp = self.api("GET", f"/api/v2/dags/{DAG_ID}")
        resp.raise_for_status()
        return resp.json()["is_paused"]

    def pause(self) -> None:
        self.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": True}).raise_for_status()


def _airflow(ui_python: Path, env: dict, *args: str) -> None:
    proc = subprocess.run(
        [str(ui_python), "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def airflow_ui(provider_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    home = tmp_path_factory.mktemp("ui-airflow-home")
    port = free_port()
    env = provider_env(
        home,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
    )
    _airflow(provider_python, env, "db", "migrate")
    _airflow(provider_python, env, "dags", "reserialize")
    server = Service(
        [str(provider_python), "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home / "api-server.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.running(), f"the api-server ended: {server.output()[-3000:]}"
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"the api-server did not answer: {server.output()[-3000:]}"
            time.sleep(1)
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        yield AirflowUI(base, passwords[USER], env, provider_python, server.log)
    finally:
        stop_all([server])


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory, browser) -> Callable[[str], Path]:
    """shot("name"): a screenshot in the test's output folder, copied to tests/output/ui/."""
    out = tmp_path_factory.mktemp("ui-screenshots")
    shutil.rmtree(STABLE_SHOTS, ignore_errors=True)
    STABLE_SHOTS.mkdir(parents=True)

    def take(name: str) -> Path:
        path = out / f"{name}.png"
        assert browser.save_screenshot(str(path)), name
        shutil.copy2(path, STABLE_SHOTS / path.name)
        return path

    return take


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{missing} missing: `apt-get install chromium chromium-driver` (make test does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1300",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


# --- driving the page ---------------------------------------------------------------------------


class Page:
    """Waits that survive React re-rendering the element they were looking at."""

    def __init__(self, driver, timeout: float = 30) -> None:
        from selenium.common.exceptions import (
            ElementClickInterceptedException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        self.d = driver
        self.wait = WebDriverWait(
            driver,
            timeout,
            ignored_exceptions=(StaleElementReferenceException, ElementClickInterceptedException),
        )

    def find(self, xpath: str):
        from selenium.webdriver.common.by import By

        def visible(d):
            found = [e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()]
            return found[-1] if found else False

        return self.wait.until(visible, f"nothing visible at {xpath}")

    def click(self, xpath: str) -> None:
        def clicked(_):
            self.find(xpath).click()
            return True

        self.wait.until(clicked, f"could not click {xpath}")

    def button(self, text: str) -> None:
        """Click the last visible button with this text (a dialog's, over the page's)."""
        self.click(f"//button[normalize-space()={text!r}]")

    def type(self, xpath: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        element = self.find(xpath)
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
        element.send_keys(text)

    def until(self, condition: Callable[[], object], message: str):
        return self.wait.until(lambda _: condition(), message)


@pytest.fixture(scope="module")
def page(browser, airflow_ui: AirflowUI, shot) -> Page:
    """The browser, logged in to the UI."""
    p = Page(browser)
    browser.get(airflow_ui.base + "/")
    p.type("//input[@name='username']", USER)
    p.type("//input[@name='password']", airflow_ui.password)
    shot("01-login")
    p.click("//button[@type='submit']")
    p.until(lambda: "/auth/login" not in browser.current_url, "still on the login page")
    p.find("//a[normalize-space()='Dags']")
    return p


def open_trigger_form(page: Page, airflow_ui: AirflowUI) -> None:
    page.d.get(f"{airflow_ui.base}/dags/{DAG_ID}")
    page.button("Trigger")
    # wait for the DAG's defaults, so that what is typed next is not reset by them
    page.until(
        lambda: page.find("//textarea[@name='element_repositories']").get_attribute("value"),
        "the trigger form did not load the Params' defaults",
    )


def refusal(page: Page) -> str:
    """The text of the error the form shows above its fields."""
    return page.find("//*[contains(text(), 'Invalid input for param')]").text


# --- the trigger form --------------------------------------------------------------------------


def test_a_bad_repository_is_refused_naming_it_and_no_run_is_created(page, airflow_ui, shot):
    airflow_ui.pause()
    before = airflow_ui.runs()
    open_trigger_form(page, airflow_ui)
    # Airflow's form offers to unpause a paused DAG, ticked by default (see the README)
    unpause = page.find("//*[contains(normalize-space(), 'Unpause github_repo_users on trigger')]")
    assert unpause.is_displayed()
    page.type("//textarea[@name='element_repositories']", "apache/airflow\nnot a repo!")
    shot("02-trigger-form-bad-repository")
    page.button("Trigger")
    message = refusal(page)
    shot("03-refused-bad-repository")
    assert "Invalid input for param repositories" in message
    assert "'not a repo!'" in message
    assert airflow_ui.runs() == before
    # The form unpaused the DAG before the API refused the run: what the README warns of.
    assert airflow_ui.paused() is False


def test_batch_size_zero_is_refused_not_clamped(page, airflow_ui, shot):
    before = airflow_ui.runs()
    open_trigger_form(page, airflow_ui)
    field = "//input[@name='element_batch_size']"
    # the form row of the field: its label (the title) and the text under it (the description)
    row = page.find(f"{field}/ancestor::*[.//label][1]")
    title = row.find_element("xpath", ".//label").text
    assert SCHEMA["batch_size"]["title"] in title and f"{BATCH_MIN} to {BATCH_MAX}" in title
    description = SCHEMA["batch_size"]["description"]
    assert description in row.text
    assert f"from {BATCH_MIN} to {BATCH_MAX}" in description
    page.type(field, "0")
    page.click("//textarea[@name='element_repositories']")  # leave the field: no clamping on blur
    assert page.find(field).get_attribute("value") == "0"
    page.button("Trigger")
    message = refusal(page)
    shot("04-refused-batch-size-0")
    assert "Invalid input for param batch_size: 0 is less than the minimum of 1" in message
    assert page.find(field).get_attribute("value") == "0"
    assert airflow_ui.runs() == before


def test_the_params_form_triggers_a_run_with_what_was_entered(page, airflow_ui, shot):
    before = airflow_ui.runs()
    open_trigger_form(page, airflow_ui)
    page.type("//textarea[@name='element_repositories']", "octo-org/alpha\nOcto-Org/beta.git")
    page.click("//*[@aria-label='Remove watchers']//*[@role='button']")
    page.type("//input[@name='element_batch_size']", "7")
    page.click("//label[@id='switch:element_full_refresh']")
    page.until(
        lambda: (
            page.find("//label[@id='switch:element_full_refresh']").get_attribute("data-state") == "checked"
        ),
        "full_refresh did not switch on",
    )
    shot("05-trigger-form-filled")
    page.button("Trigger")
    page.until(lambda: "/runs/" in page.d.current_url, "the UI did not open the new run")
    new = {k: v for k, v in airflow_ui.runs().items() if k not in before}
    assert len(new) == 1, new
    [(run_id, run)] = new.items()
    assert run_id in page.d.current_url
    # the run's page shows the conf it was given
    page.d.get(f"{airflow_ui.base}/dags/{DAG_ID}/runs/{run_id}/details")
    page.find("//*[contains(normalize-space(), 'octo-org/alpha')]")
    shot("06-run-triggered")
    assert run["conf"] == {
        "repositories": ["octo-org/alpha", "Octo-Org/beta.git"],
        # every relation (the default) but the one removed
        "relations": [
            "contributors",
            "forkers",
            "stargazers",
            "issue_authors",
            "pull_request_authors",
            "discussion_authors",
        ],
        "batch_size": 7,
        "full_refresh": True,
        "max_author_pages": 200,
    }


# --- the connection form -----------------------------------------------------------------------


def test_the_providers_page_lists_the_provider(page, airflow_ui, shot):
    page.d.get(airflow_ui.base + "/")
    page.click("//button[normalize-space()='Admin']")
    page.click("//a[@role='menuitem'][normalize-space()='Providers']")
    page.find("//*[normalize-space()='github-repo-users']")
    shot("07-providers")


def test_the_connection_form_shows_the_products_fields(page, airflow_ui, shot):
    conn_id = "github_from_the_form"
    page.d.get(airflow_ui.base + "/")
    page.click("//button[normalize-space()='Admin']")
    page.click("//a[@role='menuitem'][normalize-space()='Connections']")
    page.button("Add Connection")
    page.type("//input[@name='connection_id']", conn_id)
    page.type("//input[@role='combobox']", "quota")
    page.click(f"//*[@role='option'][normalize-space()={connection_form.HOOK_NAME!r}]")
    # standard fields: host and password relabelled, with placeholders; schema, port, login hidden
    host = page.find("//input[@name='host']")
    password = page.find("//input[@name='password']")
    assert host.get_attribute("placeholder") == connection_form.PLACEHOLDERS["host"]
    assert password.get_attribute("placeholder") == connection_form.PLACEHOLDERS["password"]
    for label in connection_form.RELABELING.values():
        page.find(f"//label[normalize-space()={label!r}]")
    for hidden in connection_form.HIDDEN_FIELDS:
        assert not page.d.find_elements("xpath", f"//input[@name={hidden!r}]"), hidden
    host.send_keys("http://127.0.0.1:9")
    password.send_keys("form-test-token-3f1b")
    shot("08-connection-form-standard-fields")
    # the product's own fields, with their labels and descriptions
    page.button("Extra Fields")
    for f in connection_form.FIELDS:
        page.find(f"//*[@id='element_{f.key}' or @name='element_{f.key}']")
        page.find(f"//label[normalize-space()={f.label!r}]")
        page.find(f"//*[normalize-space()={f.description!r}]")
    page.type("//input[@name='element_tokens']", "form-test-token-second-8c0d")
    page.type("//input[@name='element_reserve']", "7")
    page.type("//input[@name='element_timeout']", "2.5")
    page.d.execute_script("document.getElementsByName('element_tokens')[0].scrollIntoView({block: 'start'})")
    shot("09-connection-form-extra-fields")
    page.button("Save")
    page.find(f"//*[normalize-space()={conn_id!r}]")
    shot("10-connections-list")
    saved = airflow_ui.api("GET", f"/api/v2/connections/{conn_id}").json()
    assert saved["conn_type"] == connection_form.CONN_TYPE
    extra = json.loads(saved["extra"])
    assert set(extra) == {f.key for f in connection_form.FIELDS}
    assert extra["reserve"] == 7 and extra["timeout"] == "2.5"
    assert extra["tokens"] == "***"  # the API hides the secret field
    # what the hook makes of the connection as the form saved it (untouched fields are null)
    got = subprocess.run(
        [str(airflow_ui.python), "-m", "airflow", "connections", "get", conn_id, "-o", "json"],
        env=airflow_ui.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    [conn] = json.loads(got.stdout)
    settings = parse_settings(conn["host"], conn["password"], conn["extra_dejson"])
    assert settings["tokens"] == ["form-test-token-3f1b", "form-test-token-second-8c0d"]
    assert settings["reserve"] == 7 and settings["timeout"] == 2.5
    assert settings["max_inline_wait"] == 30 and settings["per_minute"]["core"] == 720
