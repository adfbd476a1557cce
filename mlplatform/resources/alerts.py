"""Alerts as a Dagster resource: always logged, and POSTed as JSON to a webhook when one is set.

A webhook is outside the platform: one that is down, slow or failing must never fail the
sensor or run that raises the alert, so delivery problems are logged, not raised.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import dagster as dg

LOGGER = logging.getLogger("mlplatform.alerts")


class NotifierResource(dg.ConfigurableResource):
    """Where alerts go: the log, and ``webhook_url`` (``MLPLATFORM_ALERT_WEBHOOK_URL``) if set."""

    webhook_url: str | None = None
    timeout_seconds: float = 3.0

    def notify(
        self,
        title: str,
        body: str,
        details: dict[str, object],
        log: logging.Logger | None = None,
    ) -> bool:
        """Log the alert (to ``log``, e.g. a sensor's, else ``mlplatform.alerts``) and POST
        ``{"text", "title", "body", "details"}`` to the webhook. True when the webhook
        answered 2xx; False when there is none or it failed (logged, never raised)."""
        log = log or LOGGER
        log.warning(f"ALERT {title}: {body}")
        if not self.webhook_url:
            return False
        # "text" is what chat webhooks (Slack, Mattermost) display; the rest is for machines.
        payload = {"text": f"{title}\n{body}", "title": title, "body": body, "details": details}
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                status = response.status
        except urllib.error.HTTPError as error:  # 4xx/5xx: an answer, not a delivery
            status = error.code
            error.close()
        except (OSError, ValueError) as error:  # refused, timed out, unresolvable, bad URL
            log.error(f"alert not delivered to {self.webhook_url}: {error}")
            return False
        if not 200 <= status < 300:
            log.error(f"alert not delivered to {self.webhook_url}: HTTP {status}")
            return False
        return True
