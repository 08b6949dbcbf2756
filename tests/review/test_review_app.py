"""The review app in headless Chromium (Debian's `chromium`, driven by the pinned Playwright):
sign in, ask, see the answer stream and its retrieved documents, rate the answer and a document,
and agent output holding markup is shown as text with nothing run. Also writes the README's
screenshot, docs/review-app.png."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO
from tests.review.conftest import ReviewStack

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO / "docs" / "review-app.png"
XSS_QUESTION = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> is this safe?'


def _pinned_playwright() -> str:
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'"playwright==([0-9.]+)"', text)
    assert found, "pyproject.toml's test extras must pin playwright exactly (playwright==X.Y.Z)"
    return found.group(1)


def check_browser_versions() -> None:
    """Fail with a clear message when the installed Playwright or Chromium drifted from the pin."""
    pinned, installed = _pinned_playwright(), importlib.metadata.version("playwright")
    assert installed == pinned, (
        f"playwright {installed} is installed but pyproject pins {pinned}: run `make install`."
    )
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/install-system-deps.sh (as root)."
    import playwright

    browsers = json.loads(
        (Path(playwright.__file__).parent / "driver" / "package" / "browsers.json").read_text()
    )
    built_for = next(b["browserVersion"] for b in browsers["browsers"] if b["name"] == "chromium")
    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
    have = re.search(r"(\d+)\.\d+\.\d+\.\d+", version)
    assert have, f"cannot read the version of {CHROMIUM}: {version!r}"
    assert have.group(1) == built_for.split(".")[0], (
        f"playwright {pinned} is built for Chromium {built_for}, but {CHROMIUM} is {have.group(0)}: "
        "pin the Playwright release matching the installed Chromium in pyproject.toml "
        "(see scripts/install-system-deps.sh)."
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    check_browser_versions()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _sign_in(
    browser: Any, stack: ReviewStack, token: str, *, width: int = 900, strip_csp: bool = False
) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    if strip_csp:
        # Without the page's Content-Security-Policy, only rendering as text stands between the
        # agent's output and the page: that is what the XSS check must exercise.
        def without_csp(route: Any) -> None:
            response = route.fetch()
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-security-policy"}
            route.fulfill(response=response, headers=headers)

        page.route(re.compile(rf".*/review/{stack.endpoint}$"), without_csp)
    page.goto(f"{stack.url}/review/{stack.endpoint}")
    page.fill("#token", token)
    with page.expect_navigation():  # the sign-in form posts, then redirects to the app or a 403 page
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    return page


def _ask(page: Any, question: str) -> Any:
    page.focus("#question")
    page.keyboard.type(question)
    page.keyboard.press("Enter")
    turn = page.locator("#conversation > li.turn").last
    turn.wait_for()
    return turn


def test_sign_in_ask_stream_documents_and_rate(browser: Any, review_stack: ReviewStack) -> None:
    page = _sign_in(browser, review_stack, review_stack.querier.token)
    assert "agentdeploy_review" in {c["name"] for c in page.context.cookies()}
    assert review_stack.querier.token not in page.content() and review_stack.querier.token not in page.url
    page.wait_for_selector("#who:has-text('CAN_QUERY')")

    started = time.monotonic()
    turn = _ask(page, "slow: how long do refunds take?")
    answer = turn.locator(".answer")
    # The answer streams: part of it shows while the agent is still producing the rest.
    page.wait_for_function(
        "() => { const a = document.querySelector('#conversation > li.turn:last-child .answer');"
        " return a.getAttribute('aria-busy') === 'true' && a.textContent.length > 0; }",
        timeout=30_000,
    )
    first_seen = time.monotonic() - started
    partial = answer.text_content()
    page.wait_for_selector("#conversation > li.turn[data-state='done']", timeout=30_000)
    finished = time.monotonic() - started
    full = answer.text_content()
    assert full == "You asked: slow: how long do refunds take?"
    assert partial and len(partial) < len(full)
    assert first_seen < finished - 1.0, (first_seen, finished)  # the agent sleeps 0.4 s per chunk

    documents = turn.locator(".document")
    assert documents.count() == 2
    assert documents.nth(0).locator(".doc-source").text_content() == "main.docs.faq/1"
    assert documents.nth(0).locator(".doc-text").text_content() == "Refunds are paid within 5 days."
    assert (
        documents.nth(1).locator(".doc-text").text_content()
        == "Shipping is free over 50 euros <b>always</b>."
    )

    # Rate by keyboard: the answer thumbs up, a comment, a suggested answer, document 1 thumbs up.
    turn.locator(".answer-rating .rating[value='positive']").focus()
    page.keyboard.press("Space")
    turn.locator(".comment").fill("Right, and short.")
    turn.locator(".suggested").fill("Refunds are paid within 5 days.")
    documents.nth(0).locator(".rating[value='positive']").focus()
    page.keyboard.press("Space")
    documents.nth(0).locator(".doc-comment").fill("This is the source.")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    turn.locator(".send-feedback").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#conversation > li.turn:last-child[data-feedback]", timeout=30_000)
    status = turn.locator(".feedback-status").text_content() or ""

    assert status.startswith("Feedback sent"), status
    # The ratings are a feedback request in the endpoint's payload table, in the documented shape.
    from deltalake import DeltaTable

    table = review_stack.payload_table()
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while not rows and time.monotonic() < deadline:
        if (table / "_delta_log").is_dir():
            rows = [
                r
                for r in DeltaTable(str(table)).to_pyarrow_table().to_pylist()
                if r["served_entity_name"] == "feedback" and "Right, and short." in (r["request"] or "")
            ]
        time.sleep(0.5)
    assert rows, "the feedback request is not in the payload table"
    body = json.loads(rows[0]["request"])["dataframe_records"][0]
    assert body["source"] == {"id": review_stack.querier.name, "type": "human"}
    assert body["request_id"] == turn.get_attribute("data-request-id")
    assert body["text_assessments"][0]["ratings"]["answer_correct"]["value"] == "positive"
    assert body["text_assessments"][0]["suggested_output"] == "Refunds are paid within 5 days."
    assert body["retrieval_assessments"] == [
        {
            "position": 0,
            "ratings": {"groundedness": {"value": "positive"}},
            "free_text_comment": "This is the source.",
            "step_id": body["retrieval_assessments"][0].get("step_id"),
        }
    ]
    # Formatted (the rows the format-inference-logs flow appends), they are assessment-log rows.
    from agentdeploy.tables.formatting import format_assessment_logs

    logged = [r for r in format_assessment_logs(DeltaTable(str(table)).to_pyarrow_table()).to_pylist()
              if r["request_id"] == body["request_id"]]
    text = next(r["text_assessment"] for r in logged if r["text_assessment"])
    assert dict(text["ratings"])["answer_correct"]["value"] == "positive"
    assert text["free_text_comment"] == "Right, and short."
    retrieval = next(r["retrieval_assessment"] for r in logged if r["retrieval_assessment"])
    assert retrieval["position"] == 0 and dict(retrieval["ratings"])["groundedness"]["value"] == "positive"
    page.context.close()


def test_agent_output_is_shown_as_text(browser: Any, review_stack: ReviewStack) -> None:
    page = _sign_in(browser, review_stack, review_stack.querier.token, strip_csp=True)
    turn = _ask(page, XSS_QUESTION)
    page.wait_for_selector("#conversation > li.turn[data-state='done']", timeout=30_000)
    assert turn.locator(".answer").text_content() == f"You asked: {XSS_QUESTION}"
    page.wait_for_timeout(300)  # an image error handler would have fired by now
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#conversation img, #conversation script").count() == 0
    page.context.close()


def test_narrow_window_and_no_permission(browser: Any, review_stack: ReviewStack) -> None:
    page = _sign_in(browser, review_stack, review_stack.querier.token, width=360)
    turn = _ask(page, "Shipping?")
    page.wait_for_selector("#conversation > li.turn[data-state='done']", timeout=30_000)
    assert turn.locator(".document").count() == 2
    assert page.evaluate("() => document.scrollingElement.scrollWidth <= window.innerWidth")
    page.context.close()

    denied = _sign_in(browser, review_stack, review_stack.outsider.token)
    assert "No access" in (denied.locator("h1").text_content() or "")
    assert "CAN_QUERY" in (denied.locator("[role=alert]").text_content() or "")
    denied.context.close()
