"""The operator console in a real browser: headless Chromium driven by selenium.

Logs in, opens the dashboard from the admin index, filters workloads by state,
opens a running workload (provisioned for real by a Celery worker on the local
cloud), terminates it with the page's button and reloads until the page shows
TERMINATED (the termination workflow runs on the worker). Screenshots of the
dashboard and the workload page go to ``CONSOLE_SCREENSHOT_DIR`` (default
``var/screenshots``) and their paths are printed.

Needs Debian's ``chromium`` and ``chromium-driver`` packages; without them the
test fails and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from placement.services import pool_block
from tests.factories import CustomerFactory, WorkloadFactory
from tests.live import wait_until
from workloads.models import RunStatus, WorkflowKind, WorkflowRun, Workload, WorkloadStatus
from workloads.services import workload_create

S = WorkloadStatus
pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
USERNAME, PASSWORD = "console-operator", "a-long-password-for-the-browser-1"
WIDTH = 1400


def screenshot_dir() -> Path:
    directory = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR") or Path(settings.BASE_DIR) / "var" / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def browser(tmp_path):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the console browser test needs {' and '.join(missing)}: "
            "install them with `apt-get install -y chromium chromium-driver`",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={WIDTH},1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def save_full_page(driver, name: str, capsys) -> Path:
    """A screenshot of the whole page, however long (the viewport is stretched to it for the shot)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    height = min(int(metrics["cssContentSize"]["height"]) + 20, 8000)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    path = screenshot_dir() / name
    try:
        assert driver.save_screenshot(str(path)), f"could not save {path}"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    with capsys.disabled():
        print(f"\nconsole screenshot: {path}")
    return path


def test_an_operator_filters_opens_and_terminates_a_workload(
    catalog, worker_factory, local_cloud_clean, live_server, browser, capsys
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    worker_factory(env={"PUBLIC_API_URL": live_server.url})
    get_user_model().objects.create_superuser(USERNAME, "console@example.com", PASSWORD)
    customer = CustomerFactory(name="Acme Rendering")
    workload, _ = workload_create(
        customer=customer, name="console-web", requirements={"vcpu": 2, "memory_gb": 4}, config={}
    )
    failed = WorkloadFactory(customer=customer, name="console-failed", status=S.FAILED, failure_reason="Quota exceeded")
    # A failed run recorded as the engine leaves it (made directly: no chain for the worker to run).
    WorkflowRun.objects.create(
        kind=WorkflowKind.PROVISION, workload=failed, status=RunStatus.FAILED, failed_step="validate-quotas",
        error="Quota exceeded: max 5 concurrent workloads", finished_at=timezone.now(),
    )  # fmt: skip
    WorkloadFactory(customer=customer, name="console-preempted", status=S.INTERRUPTED)
    pool_block(
        provider="gcp", region="us-central1", availability_zone="us-central1-a", instance_type="n2-standard-4",
        reason="spot interruption (demo)", seconds=600,
    )  # fmt: skip
    wait_until(
        lambda: Workload.objects.get(id=workload.id).status in (S.RUNNING, S.FAILED),
        timeout=120,
        what="the workload to be provisioned",
    )
    workload.refresh_from_db()
    assert workload.status == S.RUNNING, workload.failure_reason
    wait = WebDriverWait(browser, 30)

    # Log in; the admin index leads to the dashboard.
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys(USERNAME)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "operator-console-link")))
    browser.find_element(By.LINK_TEXT, "Open the dashboard →").click()

    # The dashboard: counts by state, spend, interruptions, failures, blocked pools.
    wait.until(expected_conditions.presence_of_element_located((By.ID, "state-counts")))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Operator console"
    running_card = browser.find_element(By.CSS_SELECTOR, '#state-counts [data-state="RUNNING"] .figure')
    failed_card = browser.find_element(By.CSS_SELECTOR, '#state-counts [data-state="FAILED"] .figure')
    assert (running_card.text, failed_card.text) == ("1", "1")
    assert "validate-quotas" in browser.find_element(By.ID, "failures").text
    assert "console-preempted" in browser.find_element(By.ID, "interruptions").text
    assert "$" in browser.find_element(By.ID, "month-spend").text
    assert "gcp/us-central1/us-central1-a/n2-standard-4" in browser.find_element(By.ID, "blocked-pools").text
    save_full_page(browser, "console-dashboard.png", capsys)

    # The workload list, filtered by state with the sidebar filter.
    browser.get(f"{live_server.url}/admin/workloads/workload/")
    browser.find_element(By.CSS_SELECTOR, '#changelist-filter a[href="?status__exact=RUNNING"]').click()
    wait.until(expected_conditions.url_contains("status__exact=RUNNING"))
    results = browser.find_element(By.ID, "result_list").text
    assert "console-web" in results and "console-failed" not in results
    browser.find_element(By.LINK_TEXT, "console-web").click()

    # The workload's page: the provisioning run's steps and the running segment.
    wait.until(expected_conditions.presence_of_element_located((By.ID, "workload-console")))
    assert browser.find_element(By.ID, "workload-state").text == "RUNNING"
    assert "register-routing" in browser.find_element(By.ID, "workflow-runs").text
    assert "running" in browser.find_element(By.ID, "instance-segments").text
    save_full_page(browser, "console-workload-running.png", capsys)

    # Terminate with the page's button (it asks to confirm), then reload until TERMINATED.
    browser.find_element(By.ID, "action-terminate").click()
    wait.until(expected_conditions.alert_is_present())
    browser.switch_to.alert.accept()
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist")))
    assert "console-web: terminating." in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text.lower()

    def page_shows_terminated() -> bool:
        browser.refresh()
        return browser.find_element(By.ID, "workload-state").text == "TERMINATED"

    wait_until(page_shows_terminated, timeout=120, interval=1, what="the workload page to show TERMINATED")
    runs = browser.find_element(By.ID, "workflow-runs").text
    assert "terminate" in runs and "record-billing" in runs
    assert "No operator action applies while TERMINATED" in browser.find_element(By.ID, "operator-actions").text
    save_full_page(browser, "console-workload.png", capsys)
