"""The detector catalogue: every detector the engine can emit, and what each one means.

This is the contract between detection and alerting. The engine stamps
``DetectionRecord.detector`` with a :attr:`DetectorSpec.name` from here (its integer codes,
``processors.detection.Detector``, are these codes), the default alert rules
(``core.settings.DEFAULT_ALERT_RULES``) are built from the severities and rule groups here,
settings refuse a rule naming a detector not listed here, the messages take their Chinese and
English labels from here, and ``ghgwatch replay --labels`` decides from here what pages.

Severities follow the regulations and operations: a crossed regulatory level (AQ 1029 /
Coal Mine Safety Regulations 2022 methane alarm and power-cut levels) and a gas release at a
mine or gas site are critical; CEMS intensity above its class benchmark and an anomaly of an
unknown metric are warnings; a city plume is information; every sensor or data fault is a
maintenance ticket for the device, never a page. A silent device (``no_data``) is the one
detector whose severity depends on the source kind (``DetectorSpec.severity_by_kind``).

There is no separate rising-trend detector: a sustained rise of methane above its robust
baseline is what ``release`` reports (see :data:`FORMER_NAMES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wire.events import Severity

__all__ = [
    "ALL_KINDS",
    "DETECTORS",
    "FORMER_NAMES",
    "KNOWN_DETECTORS",
    "PAGING_SEVERITIES",
    "DetectorSpec",
    "detector_spec",
    "unknown_detector_message",
]

# Source kinds (``DetectionRecord.kind``).
ALL_KINDS: tuple[str, ...] = ("mine", "leak", "city", "cems", "generic")
# Alert severities the default routes notify (``core.settings.AlertRoute.severities``).
PAGING_SEVERITIES: frozenset[Severity] = frozenset({Severity.WARNING, Severity.CRITICAL})


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """One detector as the whole system sees it.

    Attributes:
        name: the ``detector`` field of its detection records.
        code: its integer code in the engine's event arrays (``processors.detection.Detector``).
        kinds: the source kinds whose streams it runs on.
        severity: default severity: stamped on its records and used by its default rule.
        group: rule group: detections of one group at one site (or device) share an alert.
        group_by: ``site`` (one alert per site and group) or ``device`` (one ticket per device).
        regulatory: it reports a reading above a level set by regulation, so it is never a
            false alarm whatever caused the reading.
        meaning: what it means, one sentence (documentation and the README table).
        label_zh: Chinese label in messages.
        label_en: English label in messages.
        severity_by_kind: for a detector whose severity depends on the source kind, the
            default per kind (``severity`` is then the highest); the detector stamps it on
            its records (a setting) and its default rule keeps the record's severity.
    """

    name: str
    code: int
    kinds: tuple[str, ...]
    severity: Severity
    group: str
    group_by: Literal["site", "device"]
    regulatory: bool
    meaning: str
    label_zh: str
    label_en: str
    severity_by_kind: tuple[tuple[str, Severity], ...] = ()

    @property
    def pages(self) -> bool:
        """Whether its default alert notifies on-call staff (warning or critical)."""
        return self.severity in PAGING_SEVERITIES

    def severity_for(self, kind: str) -> Severity:
        """The default severity of its detections on a source kind."""
        return dict(self.severity_by_kind).get(kind, self.severity)


def _fault(
    name: str, code: int, kinds: tuple[str, ...], zh: str, en: str, meaning: str
) -> DetectorSpec:
    """A sensor or data fault: a maintenance ticket per device, never a page."""
    return DetectorSpec(
        name=name,
        code=code,
        kinds=kinds,
        severity=Severity.MAINTENANCE,
        group="sensor",
        group_by="device",
        regulatory=False,
        meaning=meaning,
        label_zh=zh,
        label_en=en,
    )


DETECTORS: tuple[DetectorSpec, ...] = (
    DetectorSpec(
        name="threshold_alarm",
        code=0,
        kinds=("mine",),
        severity=Severity.CRITICAL,
        group="gas",
        group_by="site",
        regulatory=True,
        meaning="Mine methane reached the alarm level of the sensor's location class (Coal "
        "Mine Safety Regulations 2022), flagged at the crossing reading.",
        label_zh="浓度超限报警",
        label_en="methane alarm level",
    ),
    DetectorSpec(
        name="power_cut",
        code=1,
        kinds=("mine",),
        severity=Severity.CRITICAL,
        group="gas",
        group_by="site",
        regulatory=True,
        meaning="Mine methane reached the power-cut level of the sensor's location class: "
        "power to the area is cut until methane falls below the restore level.",
        label_zh="甲烷超限断电",
        label_en="methane power-cut level",
    ),
    DetectorSpec(
        name="release",
        code=2,
        kinds=("mine", "leak"),
        severity=Severity.CRITICAL,
        group="gas",
        group_by="site",
        regulatory=False,
        meaning="Methane at a mine or gas site rising and staying above its robust baseline: "
        "a gas release, before any regulatory level is reached (the engine has no separate "
        "rising-trend detector; a sustained rise is reported as this).",
        label_zh="突发释放/泄漏",
        label_en="gas release",
    ),
    DetectorSpec(
        name="plume",
        code=3,
        kinds=("city",),
        severity=Severity.INFO,
        group="plume",
        group_by="site",
        regulatory=False,
        meaning="A city station's CO2 or CH4 above its robust baseline for a while: an urban "
        "plume, recorded for analysis, no page.",
        label_zh="城市烟羽",
        label_en="urban plume",
    ),
    DetectorSpec(
        name="anomaly",
        code=4,
        kinds=("mine", "generic"),
        severity=Severity.WARNING,
        group="gas",
        group_by="site",
        regulatory=False,
        meaning="A metric with no dedicated detector (mine CO or air velocity, unknown "
        "metrics) far from its robust baseline, either way; it joins the site's gas alert.",
        label_zh="数据异常",
        label_en="anomaly",
    ),
    _fault(
        "spike", 5, ALL_KINDS, "尖峰", "sensor spike",
        "One sample far outside its noise that returns at once: a sensor or transmission "
        "glitch.",
    ),
    _fault(
        "stuck", 6, ALL_KINDS, "传感器数值卡滞", "sensor stuck",
        "The value has not changed for longer than a live sensor can hold still.",
    ),
    _fault(
        "out_of_range", 7, ALL_KINDS, "超出量程", "out of range",
        "A reading outside the metric's physically plausible range.",
    ),
    _fault(
        "gap", 8, ALL_KINDS, "数据中断", "data gap",
        "No data for longer than the gap limit, reported when data resumes.",
    ),
    _fault(
        "co2_without_flow", 9, ("cems",), "有CO2无流量", "CO2 without flow",
        "A CEMS unit reports flue CO2 while its flow reads none: a flow-meter fault.",
    ),
    _fault(
        "load_without_flow", 10, ("cems",), "有负荷无流量", "load without flow",
        "A CEMS unit reports electrical load while its flow reads none: a flow-meter fault.",
    ),
    DetectorSpec(
        name="intensity_above_benchmark",
        code=11,
        kinds=("cems",),
        severity=Severity.WARNING,
        group="emissions",
        group_by="site",
        regulatory=False,
        meaning="A CEMS unit's valid hour emitted more g CO2/kWh than its unit class "
        "benchmark.",
        label_zh="排放强度超基准",
        label_en="intensity above benchmark",
    ),
    _fault(
        "hour_invalid", 12, ("cems",), "小时数据无效", "invalid hour",
        "A CEMS hour with fewer valid minutes than HJ 75/76 requires (45): no valid hourly "
        "value.",
    ),
    _fault(
        "drift", 13, ALL_KINDS, "传感器漂移", "sensor drift",
        "The baseline has moved away from the sensor's own slow reference for long: a "
        "calibration problem.",
    ),
    _fault(
        "implausible_co2_o2", 14, ("cems",), "CO2与O2不合理", "implausible CO2 + O2",
        "CEMS CO2 plus O2 above what combustion in air allows: an analyser fault.",
    ),
    _fault(
        "mass_rate_step", 15, ("cems",), "排放速率突变", "mass-rate step",
        "The CEMS CO2 mass rate jumped between valid minutes while the load held steady: a "
        "flow-field or analyser fault.",
    ),
    _fault(
        "neighbour_drift", 16, ("city",), "相对邻站漂移", "drift against neighbours",
        "A city station's baseline moved away from its network's other stations: a "
        "calibration problem.",
    ),
    DetectorSpec(
        name="no_data",
        code=17,
        kinds=ALL_KINDS,
        severity=Severity.CRITICAL,
        group="liveness",
        group_by="device",
        regulatory=False,
        meaning="A device or gateway has sent nothing for longer than its learned sampling "
        "pattern allows (wall clock, with a floor), or its MQTT last will said it went "
        "offline; cleared when its data is back. A silent mine sensor is an alarm "
        "condition (Coal Mine Safety Regulations 2022): critical there, a warning on leak "
        "monitors, a maintenance ticket elsewhere (settings).",
        label_zh="设备离线/无数据",
        label_en="no data (device silent)",
        severity_by_kind=(
            ("mine", Severity.CRITICAL),
            ("leak", Severity.WARNING),
            ("city", Severity.MAINTENANCE),
            ("cems", Severity.MAINTENANCE),
            ("generic", Severity.MAINTENANCE),
        ),
    ),
    DetectorSpec(
        name="quarterly_warning",
        code=18,
        kinds=ALL_KINDS,
        severity=Severity.WARNING,
        group="quarterly",
        group_by="device",
        regulatory=False,
        meaning="The quarterly carbon early warning put a source (CEMS unit, plant, region, "
        "city, mine or gas site) at orange or red for a quarter; published by the quarterly "
        "report, not the engine, once per source, quarter and level while the level holds.",
        label_zh="季度碳排放预警",
        label_en="quarterly carbon warning",
    ),
)  # fmt: skip

KNOWN_DETECTORS: tuple[str, ...] = tuple(d.name for d in DETECTORS)
_BY_NAME: dict[str, DetectorSpec] = {d.name: d for d in DETECTORS}

# Names the alert side once used that no detector emits, and what to use instead.
FORMER_NAMES: dict[str, str] = {
    "sudden_release": "release",
    "rising_trend": "release (a sustained rise is a release; there is no separate detector)",
    "flatline": "stuck",
    "sensor_fault": "spike, stuck, out_of_range, drift ... (one name per fault)",
    "calibration": "drift or neighbour_drift (flagged calibration readings are not detected)",
}


def detector_spec(name: str) -> DetectorSpec | None:
    """The catalogue entry of a detector name, or None for a name no detector emits."""
    return _BY_NAME.get(name)


def unknown_detector_message(name: str) -> str:
    """The error for a detector name not in the catalogue: the valid names, and a hint."""
    hint = FORMER_NAMES.get(name)
    use = f" (use {hint})" if hint else ""
    return f"unknown detector {name!r}{use}; known detectors: {', '.join(KNOWN_DETECTORS)}"
