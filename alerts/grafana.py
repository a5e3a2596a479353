"""Grafana adapter: alert start and end as annotations through grafana-client."""

from __future__ import annotations

import asyncio
from typing import Any

import niquests
import structlog
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaBadInputError,
    GrafanaClientError,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from alerts.exceptions import NotifyFailed, NotifyRejected
from alerts.messages import AlertMessage, render_text, render_title
from alerts.notifiers import SendResult
from core.settings import AlertsSettings

__all__ = ["GrafanaAnnotator", "annotation_tags"]

log = structlog.get_logger(__name__)


def annotation_tags(msg: AlertMessage) -> list[str]:
    """Tags that let a dashboard show an alert's annotations for its network and site."""
    return [
        "ghgwatch",
        "alert",
        f"alert:{msg.alert_id}",
        f"severity:{msg.severity}",
        f"network:{msg.network}",
        f"site:{msg.site}",
        f"kind:{msg.kind}",
    ]


def _ms(msg: AlertMessage) -> tuple[int, int | None]:
    start = int(msg.started_at.timestamp() * 1000)
    end = int(msg.resolved_at.timestamp() * 1000) if msg.resolved_at else None
    return start, end


class GrafanaAnnotator:
    """Creates an annotation when an alert opens and turns it into a region when it ends.

    The annotation belongs to the dashboard of the alert's kind (``grafana_dashboards``) and
    carries :func:`annotation_tags`; every provisioned dashboard queries those tags.

    Args:
        cfg: the ``alerts`` section; needs ``grafana_url`` (``grafana_token`` for auth, or
            user:password in the URL).
    """

    name = "grafana"
    channel = "grafana"

    def __init__(self, cfg: AlertsSettings) -> None:
        assert cfg.grafana_url is not None
        token = cfg.grafana_token.get_secret_value() if cfg.grafana_token else None
        self._api = GrafanaApi.from_url(
            cfg.grafana_url, credential=token, timeout=cfg.send_timeout_s
        )
        self._tz = cfg.timezone
        self._timeout_s = cfg.send_timeout_s
        self._dashboards = dict(cfg.grafana_dashboards)

    def _call(self, msg: AlertMessage, annotation_id: int | None) -> dict[str, Any]:
        start, end = _ms(msg)
        text = f"{render_title(msg, 'both')}\n{render_text(msg, 'both', self._tz)}"
        tags = annotation_tags(msg)
        ann = self._api.annotations
        if msg.event == "resolved" and annotation_id is not None:
            result: dict[str, Any] = ann.update_annotation(
                annotation_id, time_from=start, time_to=end, tags=tags, text=text
            )
            return {"id": annotation_id, **result}
        # Bound to the kind's dashboard (its built-in annotation query shows it on every
        # panel); the tags let the other dashboards' tag queries show it too.
        return dict(
            ann.add_annotation(
                dashboard_uid=self._dashboards.get(msg.kind),
                time_from=start,
                time_to=end,
                tags=tags,
                text=text,
            )
        )

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """Create (opened) or close (resolved) the alert's annotation.

        Raises:
            NotifyFailed: Grafana unreachable, timed out or answered 5xx.
            NotifyRejected: Grafana refused the request (auth, bad input).
        """
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                result = await asyncio.to_thread(self._call, msg, annotation_id)
        except (GrafanaUnauthorizedError, GrafanaBadInputError) as exc:
            raise NotifyRejected(f"grafana: {type(exc).__name__}: {exc}") from exc
        except GrafanaClientError as exc:
            raise NotifyRejected(f"grafana: {type(exc).__name__}: {exc}") from exc
        except (
            GrafanaServerError,
            GrafanaTimeoutError,
            niquests.exceptions.RequestException,
            TimeoutError,
            OSError,
        ) as exc:
            raise NotifyFailed(f"grafana: {type(exc).__name__}: {exc}") from exc
        ann_id = result.get("id")
        return SendResult(
            response=str(result)[:300], annotation_id=int(ann_id) if ann_id is not None else None
        )

    async def aclose(self) -> None:
        """Nothing held open."""
