"""Pure numpy detection: the streaming window engine, its detectors and their outputs."""

from processors.detection.catalogue import (
    DETECTOR_NAMES,
    DETECTOR_SEVERITY,
    KIND_NAMES,
    Detector,
    Kind,
    infer_kind,
    infer_location,
    parse_kind,
)
from processors.detection.cems import CEMS_PARAMS, CemsAggregator
from processors.detection.engine import DetectionEngine, EngineOutput, flag_codes
from processors.detection.neighbours import NeighbourCheck
from processors.detection.records import ns_to_datetime, to_records
from processors.detection.streams import StreamInfo, StreamTable, TrendMode
from processors.detection.tables import NEVER_NS, DerivedTable, EventTable

__all__ = [
    "CEMS_PARAMS",
    "DETECTOR_NAMES",
    "DETECTOR_SEVERITY",
    "KIND_NAMES",
    "NEVER_NS",
    "CemsAggregator",
    "DerivedTable",
    "DetectionEngine",
    "Detector",
    "EngineOutput",
    "EventTable",
    "Kind",
    "NeighbourCheck",
    "StreamInfo",
    "StreamTable",
    "TrendMode",
    "flag_codes",
    "infer_kind",
    "infer_location",
    "ns_to_datetime",
    "parse_kind",
    "to_records",
]
