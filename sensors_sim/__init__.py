"""Device simulator: realistic city, CEMS, coal-mine and leak-monitor streams over MQTT."""

from sensors_sim.events import EventKind, EventPlan, InjectedEvent
from sensors_sim.payloads import (
    EXPECTED_REASON,
    Malformation,
    SimMessage,
    encode_block,
    malform,
    malformations_for,
)
from sensors_sim.profiles import CHANNELS, Fleet, build_fleet
from sensors_sim.publisher import MqttPublisher
from sensors_sim.runner import run_simulation
from sensors_sim.scenarios import ScenarioConfig, ScenarioSummary, generate_scenarios
from sensors_sim.signals import Sample, SignalModel
from sensors_sim.simulator import KindCounts, SimulationConfig, SimulationStats, Simulator

__all__ = [
    "CHANNELS",
    "EXPECTED_REASON",
    "EventKind",
    "EventPlan",
    "Fleet",
    "InjectedEvent",
    "KindCounts",
    "Malformation",
    "MqttPublisher",
    "Sample",
    "ScenarioConfig",
    "ScenarioSummary",
    "SignalModel",
    "SimMessage",
    "SimulationConfig",
    "SimulationStats",
    "Simulator",
    "build_fleet",
    "encode_block",
    "generate_scenarios",
    "malform",
    "malformations_for",
    "run_simulation",
]
