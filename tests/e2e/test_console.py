"""The web console in a real Chromium against `batchops serve`: sign in, go through every page
and action, and check what a person sees. With BATCHOPS_CONSOLE_SCREENSHOTS=docs/console
(`make console-screenshots`) the tests also refresh the screenshots of docs/console.md."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.config import Settings
from tests.e2e.browser import Browser, chromium
from tests.e2e.conftest import ServeProcess, order_locked, run_cli
from tests.integration.helpers import eventually, publish_raw

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_update.json"
ADMIN, CLIENT, PROFESSIONAL = 1, 3, 6


@dataclass
class Console:
    settings: Settings
    base_url: str
    tokens: dict[int, str]
    partial_batch: str  # professional 6's example batch: 2 succeeded, 1 CONFLICT

    async def submit(
        self, user: int, operations: list[dict[str, Any]], *, wait: bool = True
    ) -> str:
        """A batch over the HTTP API (waited for unless `wait` is False); its id."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            answer = await client.post(
                "/api/v1/batch/" + ("?wait=10" if wait else ""),
                headers={"Authorization": f"Bearer {self.tokens[user]}"},
                json={"operation_type": "order_update", "operations": operations},
            )
        assert answer.status_code == (200 if wait else 202), answer.text
        return str(answer.json()["batch_id"])


def token_for(cli_env: dict[str, str], user: int) -> str:
    created = run_cli(cli_env, "token", "create", str(user))
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


@pytest.fixture
async def console(
    settings: Settings, cli_env: dict[str, str], serve: Callable[..., ServeProcess]
) -> Console:
    process = serve("serve")
    await process.wait_until_ready()
    tokens = {user: token_for(cli_env, user) for user in (ADMIN, CLIENT, PROFESSIONAL)}
    console = Console(settings, f"http://127.0.0.1:{process.probe_port}", tokens, "")
    example = json.loads(EXAMPLE.read_text("utf-8"))
    console.partial_batch = await console.submit(PROFESSIONAL, example["operations"])
    return console


@pytest.fixture
def browser(console: Console) -> Any:
    with chromium() as driver:
        yield Browser(driver, console.base_url)


class TestSigningIn:
    def test_the_console_asks_for_a_token_refuses_a_wrong_one_and_signs_in_and_out(
        self, console: Console, browser: Browser
    ) -> None:
        browser.open("/console/batches")
        browser.shows("Paste an API token")
        assert browser.path.startswith("/console/login")
        browser.screenshot("sign-in")

        browser.sign_in("bo_not-a-real-token")
        browser.shows("That token is unknown, revoked, or its user is inactive.")

        browser.sign_in(console.tokens[ADMIN])
        browser.shows("Batches", "h1")  # back where it was asked for
        assert browser.path.startswith("/console/batches")
        assert "user 1 · admin" in browser.text("header")
        session = browser.driver.get_cookie("batchops_console")
        assert session is not None
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"

        browser.click("header form button")  # Sign out
        browser.shows("Paste an API token")
        browser.open("/console/batches")
        browser.shows("Paste an API token")


class TestBatches:
    async def test_the_list_filters_searches_and_shows_new_batches_by_itself(
        self, console: Console, browser: Browser
    ) -> None:
        browser.sign_in(console.tokens[ADMIN])
        browser.click_link("Batches")
        browser.shows(console.partial_batch, "#batch-list")
        browser.shows("partial", "#batch-list")
        browser.screenshot("batches")

        # A batch submitted while the page is open appears without a reload.
        done = await console.submit(
            PROFESSIONAL, [{"method": "PATCH", "resource_id": 12, "data": {"notes": "live"}}]
        )
        browser.shows(done, "#batch-list", timeout=20)

        browser.find("select[name=status]").send_keys("failed")
        browser.click("form.filters button")
        browser.shows("No batches match.", "#batch-list")
        assert "status=failed" in browser.path

        browser.open("/console/batches")
        browser.type("input[name=q]", console.partial_batch)
        browser.click("form.filters button")
        browser.shows("1 matching batches")
        assert done not in browser.text("#batch-list")

        browser.open(f"/console/batches?actor={ADMIN}")
        browser.shows("No batches match.", "#batch-list")
        browser.open("/console/batches?from=2000-01-01&to=2000-01-02")
        browser.shows("No batches match.", "#batch-list")
        browser.open("/console/batches?q=not-an-id")
        browser.shows("search: 'not-an-id' is not a batch id")

    async def test_a_batch_shows_each_operation_its_timing_and_events_and_downloads_them(
        self, console: Console, browser: Browser
    ) -> None:
        browser.sign_in(console.tokens[ADMIN])
        browser.click_link("Batches")
        browser.click_link(console.partial_batch)
        browser.shows(f"Batch {console.partial_batch}", "h1")
        facts = browser.text("dl.facts")
        assert "partial" in facts
        assert "3: 2 succeeded, 1 failed, 0 skipped" in facts
        assert "user 6" in facts
        assert "batch.order_update.partial committed" in facts
        rows = [row.text for row in browser.all("table.operations tbody tr")]
        assert len(rows) == 3
        assert "PATCH resource 3" in rows[0]  # the input
        assert "succeeded 200" in rows[0]
        assert "operation.order_update.succeeded" in rows[0]
        assert "CONFLICT: order status cannot change from pending to completed" in rows[2]
        assert "ms" in rows[2]  # how long it took
        browser.click("#operation-1 td.input summary")  # what the second operation asked for
        browser.shows('"notes": "call before arriving"', "#operation-1")
        browser.click("#operation-0 details.result summary")  # the order as it became
        browser.shows('"client_id": 3', "#operation-0")
        browser.screenshot("batch")

        cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
        links = {a.text: str(a.get_attribute("href")) for a in browser.all("section.actions a")}
        async with httpx.AsyncClient(cookies=cookies, timeout=10) as client:
            as_csv = await client.get(links["Download results (CSV)"])
            as_json = await client.get(links["Download results (JSON)"])
        assert as_csv.status_code == 200
        assert "attachment" in as_csv.headers["content-disposition"]
        assert as_csv.text.splitlines()[0].startswith("index,resource_id,outcome,status")
        assert [r["outcome"] for r in as_json.json()] == ["succeeded", "succeeded", "failed"]

    async def test_a_batch_shows_how_its_webhook_stands(
        self, console: Console, browser: Browser
    ) -> None:
        # Delivered on the second try, as the webhook worker records it.
        engine = create_async_engine(console.settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO webhooks (batch_id, url, attempts, last_status, delivered_at)"
                        " VALUES (:batch_id, 'https://partner.example/hook', 2, 200,"
                        " '2026-11-30 10:00:03+00')"
                    ),
                    {"batch_id": uuid.UUID(console.partial_batch)},
                )
        finally:
            await engine.dispose()
        browser.signed_in(console.tokens[ADMIN])
        browser.open(f"/console/batches/{console.partial_batch}")
        browser.shows(
            "https://partner.example/hook: delivered 2026-11-30 10:00:03 UTC"
            " (2 tries, last answer 200)",
            "#webhook",
        )
        # A batch submitted without a callback has no webhook line.
        note = {"method": "PATCH", "resource_id": 6, "data": {"notes": "ring twice"}}
        other = await console.submit(PROFESSIONAL, [note])
        browser.open(f"/console/batches/{other}")
        browser.shows(f"Batch {other}", "h1")
        assert browser.all("#webhook") == []

    def test_an_owner_sees_only_their_own_batches(self, console: Console, browser: Browser) -> None:
        browser.sign_in(console.tokens[CLIENT])
        browser.shows("Batches", "h1")
        browser.shows("No batches match.", "#batch-list")
        header = browser.text("header")
        assert "Dead letters" not in header
        assert "Overview" not in header
        assert browser.all("input[name=actor]") == []  # no actor filter for an owner

        browser.open(f"/console/batches/{console.partial_batch}")
        browser.shows(f"There is no batch {console.partial_batch} that you may see.")
        browser.open(f"/console/batches?q={console.partial_batch}&actor={PROFESSIONAL}")
        browser.shows("No batches match.", "#batch-list")
        browser.open("/console/dead-letters")
        browser.shows("dead letters are for admin users")

        browser.sign_in(console.tokens[PROFESSIONAL])
        browser.shows(console.partial_batch, "#batch-list")


class TestJobControl:
    async def test_a_partial_batch_is_retried_and_the_retry_links_back(
        self, console: Console, browser: Browser
    ) -> None:
        browser.signed_in(console.tokens[PROFESSIONAL])
        browser.open(f"/console/batches/{console.partial_batch}")
        assert browser.all("#cancel") == []  # finished: nothing left to stop

        browser.click("#retry")

        browser.shows(f"published as the retry of {console.partial_batch}")
        assert browser.path != f"/console/batches/{console.partial_batch}"
        browser.shows("failed", "#batch-status", timeout=20)  # order 9 still cannot complete
        assert console.partial_batch in browser.text("dl.facts")  # Retry of …
        rows = [row.text for row in browser.all("table.operations tbody tr")]
        assert len(rows) == 1
        assert "PATCH resource 9" in rows[0]
        browser.screenshot("retry")

    async def test_a_running_batch_is_cancelled_before_its_next_operation(
        self, console: Console, browser: Browser
    ) -> None:
        browser.signed_in(console.tokens[ADMIN])
        async with order_locked(console.settings.database_url, 15):
            stuck = await console.submit(
                ADMIN,
                [
                    {"method": "PATCH", "resource_id": 15, "data": {"notes": "first"}},
                    {"method": "PATCH", "resource_id": 16, "data": {"notes": "second"}},
                ],
                wait=False,
            )
            browser.open(f"/console/batches/{stuck}")
            browser.shows("processing", "#batch-status")
            browser.screenshot("batch-running")
            browser.click("#cancel")
            browser.shows("cancel requested: the batch stops before its next operation")
        browser.shows("cancelled", "#batch-status", timeout=20)
        assert "Cancel requested" in browser.text("dl.facts")
        assert browser.all("#cancel") == []
        assert "cancelled" in browser.text("#operation-1")


class TestOperatorPages:
    async def test_dead_letters_show_why_and_the_raw_body_and_are_replayed_and_purged(
        self, console: Console, browser: Browser
    ) -> None:
        topology = console.settings.topology
        invalid: dict[str, Any] = {
            "batch_id": str(uuid.uuid4()),
            "operation_type": "order_update",
            "actor_id": 6,
            "operations": [],
        }
        await publish_raw(
            console.settings.amqp_url, topology.requests_exchange, json.dumps(invalid).encode()
        )
        await publish_raw(console.settings.amqp_url, topology.requests_exchange, b"\x00\xffbin")
        browser.sign_in(console.tokens[ADMIN])

        def both_dead() -> bool:
            browser.open("/console/dead-letters")
            return browser.text("#dead-count") == "2"

        browser.until(both_dead, "two dead letters")
        # The queue is in the order the two were dead-lettered, which concurrent deliveries
        # do not fix; each letter is found by what it holds.
        letters = browser.all("article.letter")
        [first] = [letter for letter in letters if invalid["batch_id"] in letter.text]
        [second] = [letter for letter in letters if letter is not first]
        assert "VALIDATION_ERROR: operations:" in first.text
        assert '"operations": []' in first.text  # the body as text
        assert "Body (hex)" in second.text
        assert "00 ff 62 69 6e" in second.text
        assert "x-first-death-reason" in browser.driver.page_source  # the headers
        browser.screenshot("dead-letters")

        first.find_element("css selector", "button").click()  # Replay this batch
        browser.shows("replayed 1 dead letters; 1 left")

        browser.click("form.danger button")  # not confirmed: the browser asks for the box
        assert browser.path.startswith("/console/dead-letters")
        assert browser.all("p.notice") == [] or "purged" not in browser.text("p.notice")
        browser.click("form.danger input[name=confirm]")
        browser.click("form.danger button")
        browser.shows("purged")

        async def emptied() -> bool:
            return "0 requests in" in await asyncio.to_thread(_dead_page, browser)

        await eventually(emptied, timeout=15, what="the dead-letter queue emptied")

    def test_the_overview_shows_queues_work_the_last_hour_and_the_outbox(
        self, console: Console, browser: Browser
    ) -> None:
        browser.sign_in(console.tokens[ADMIN])  # an admin lands on the overview
        browser.shows("Overview", "h1")
        queues = browser.text("table.queues")
        requests = console.settings.topology.requests_queue
        assert f"{requests} 0 1" in queues  # nothing waiting, one consumer
        assert browser.text("#finished-hour") == "1"
        assert browser.text("#failure-rate") == "100.00%"  # the one batch is partial
        assert browser.text("#in-flight") == "0"
        assert browser.text("#outbox-backlog") == "0"
        assert browser.text("#fair-share-waiting") == "0"
        assert len(browser.all("svg.chart rect.ok")) == 60
        assert console.partial_batch in browser.text("#overview")
        browser.screenshot("overview")


def _dead_page(browser: Browser) -> str:
    browser.open("/console/dead-letters")
    return browser.text("main")


class TestOfflineDocs:
    def test_swagger_ui_redoc_and_the_asyncapi_page_render_without_the_internet(
        self, console: Console, browser: Browser
    ) -> None:
        browser.open("/docs")
        browser.shows("Status, history and submission of batchops batches", timeout=30)
        browser.shows("/api/v1/batch/{batch_id}/")
        browser.screenshot("api-docs")

        browser.open("/redoc")
        browser.shows("Status, history and submission of batchops batches", timeout=30)

        browser.open("/docs/asyncapi")
        browser.shows("AsyncAPI", "h1")
        assert "{namespace}.requests" in browser.text("table.channels")
        browser.shows("BatchRequest")
        browser.screenshot("asyncapi")
