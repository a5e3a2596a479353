"""Pure alert rules: which alert a detection belongs to, how severe it is, who hears of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.settings import AlertRoute, AlertRule
from wire.events import DetectionRecord

__all__ = [
    "SEVERITY_RANK",
    "AlertDecision",
    "classify",
    "escalation_targets",
    "route_targets",
]

SEVERITY_RANK: dict[str, int] = {"info": 0, "maintenance": 1, "warning": 2, "critical": 3}

# Used when no configured rule matches: keep the detection's severity, group per site.
_FALLBACK = AlertRule(name="default", group="detections")


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """What a detection means for alerting.

    Attributes:
        rule: name of the rule that matched (``default`` when none did).
        severity: the alert severity (info, maintenance, warning, critical).
        group: the rule's group name (detections of one group at one site share an alert).
        group_key: ``network/site/group`` or ``network/site/group/device`` - at most one
            active alert exists per key.
    """

    rule: str
    severity: str
    group: str
    group_key: str


def _matches(values: Sequence[str], value: str | None) -> bool:
    return not values or (value is not None and value in values)


def classify(det: DetectionRecord, rules: Sequence[AlertRule]) -> AlertDecision:
    """Apply the first matching rule to a detection.

    Args:
        det: the detection as published.
        rules: configured rules, in order.

    Returns:
        The alert decision; never raises (unmatched detections use a default rule).
    """
    rule = next(
        (
            r
            for r in rules
            if _matches(r.detectors, det.detector)
            and _matches(r.kinds, det.kind)
            and _matches(r.metrics, det.metric)
        ),
        _FALLBACK,
    )
    severity = rule.severity or str(det.severity)
    key = f"{det.network}/{det.site}/{rule.group}"
    if rule.group_by == "device":
        key = f"{key}/{det.device_id}"
    return AlertDecision(rule=rule.name, severity=severity, group=rule.group, group_key=key)


def _matching_routes(
    routes: Sequence[AlertRoute], network: str, site: str, kind: str, severity: str
) -> list[AlertRoute]:
    return [
        r
        for r in routes
        if _matches(r.networks, network)
        and _matches(r.sites, site)
        and _matches(r.kinds, kind)
        and _matches(r.severities, severity)
    ]


def route_targets(
    routes: Sequence[AlertRoute], *, network: str, site: str, kind: str, severity: str
) -> tuple[str, ...]:
    """Notifier names that hear about a new (or resolved) alert, in route order, unique.

    Args:
        routes: configured routes; every matching one contributes its ``targets``.
        network: the alert's network.
        site: the alert's site.
        kind: the alert's source kind.
        severity: the alert's severity.

    Returns:
        Target names (possibly empty: the alert is recorded but nobody is told).
    """
    names: list[str] = []
    for r in _matching_routes(routes, network, site, kind, severity):
        names.extend(t for t in r.targets if t not in names)
    return tuple(names)


def escalation_targets(
    routes: Sequence[AlertRoute],
    *,
    network: str,
    site: str,
    kind: str,
    severity: str,
    level: int,
) -> tuple[str, ...]:
    """Targets for escalation ``level`` (1 = first escalation): the route's targets again plus
    every escalation contact up to that level (the last one repeats once the list runs out).

    Args:
        routes: configured routes.
        network: the alert's network.
        site: the alert's site.
        kind: the alert's source kind.
        severity: the alert's severity.
        level: escalation level, 1 or more.

    Returns:
        Target names, unique, in order.
    """
    names: list[str] = []
    for r in _matching_routes(routes, network, site, kind, severity):
        chain = list(r.escalation[: max(level, 0)])
        for t in (*r.targets, *chain):
            if t not in names:
                names.append(t)
    return tuple(names)
