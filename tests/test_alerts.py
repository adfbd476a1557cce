"""The notifier: every alert is logged; with a webhook it is POSTed as JSON, and a webhook
that refuses, hangs or fails is logged, never raised."""

from __future__ import annotations

import logging

import pytest

from mlplatform.resources import NotifierResource
from tests.conftest import refused_url, webhook_server

DETAILS = {"check": "data_drift:drift_within_threshold", "partition": "2025-02-03", "psi": 0.42}


def test_an_alert_is_logged_and_posted_as_json(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlplatform.alerts")
    with webhook_server() as hook:
        delivered = NotifierResource(webhook_url=hook.url).notify(
            "Retraining requested", "3 of 5 features drifted", DETAILS
        )
    assert delivered
    assert hook.received == [
        {
            "content_type": "application/json",
            "json": {
                "text": "Retraining requested\n3 of 5 features drifted",
                "title": "Retraining requested",
                "body": "3 of 5 features drifted",
                "details": DETAILS,
            },
        }
    ]
    assert "ALERT Retraining requested: 3 of 5 features drifted" in caplog.text


def test_without_a_webhook_the_alert_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlplatform.alerts")
    assert not NotifierResource().notify("Retraining requested", "why", DETAILS)
    assert "ALERT Retraining requested: why" in caplog.text


def test_a_refused_connection_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    url = refused_url()
    assert not NotifierResource(webhook_url=url).notify("title", "body", DETAILS)
    assert f"alert not delivered to {url}" in caplog.text and "refused" in caplog.text.lower()


def test_a_webhook_slower_than_the_timeout_is_given_up(caplog: pytest.LogCaptureFixture) -> None:
    with webhook_server() as hook:
        hook.delay_seconds = 2.0
        notifier = NotifierResource(webhook_url=hook.url, timeout_seconds=0.2)
        assert not notifier.notify("title", "body", DETAILS)
    assert len(hook.received) == 1  # it arrived; the answer did not come in time
    assert "alert not delivered" in caplog.text and "timed out" in caplog.text


def test_a_webhook_answering_5xx_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with webhook_server() as hook:
        hook.status = 503
        assert not NotifierResource(webhook_url=hook.url).notify("title", "body", DETAILS)
    assert f"alert not delivered to {hook.url}: HTTP 503" in caplog.text
