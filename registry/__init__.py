"""Device registry: who may publish, with which credentials, and what each device is.

Below the services (the bridge, the HJ 212 gateway and the detection service read it) and
above the adapters.

The bridge, the detector and the HJ 212 gateway read the cached
:class:`registry.view.RegistryView` (the gateway checks logger PWs with
:func:`registry.credentials.verify_password`); commands and the reports use
:class:`registry.store.RegistryStore` directly.
"""

from registry.acl import ADMIN_ROLE, BRIDGE_ROLE, NOTIFIER_ROLE
from registry.brokerconf import TlsFiles, auth_lines, find_dynsec_plugin, tls_listener_lines
from registry.certs import CertFiles, make_client_cert, make_dev_ca, make_server_cert
from registry.credentials import (
    generate_password,
    hash_password,
    mosquitto_password_line,
    verify_password,
)
from registry.dynsec import DynsecClient, DynsecError, initial_config
from registry.files import BrokerReloadError, acl_file_text, broker_reloader, write_private
from registry.importer import ImportRow, parse_csv, parse_units
from registry.models import DeviceRecord, mqtt_username
from registry.onboard import (
    BrokerApplier,
    DynsecApplier,
    FilesApplier,
    ImportReport,
    Issued,
    NoBroker,
    Onboarding,
)
from registry.store import DeviceExists, RegistryStore, UnknownDevice
from registry.view import RegistryView

__all__ = [
    "ADMIN_ROLE",
    "BRIDGE_ROLE",
    "NOTIFIER_ROLE",
    "BrokerApplier",
    "BrokerReloadError",
    "CertFiles",
    "DeviceExists",
    "DeviceRecord",
    "DynsecApplier",
    "DynsecClient",
    "DynsecError",
    "FilesApplier",
    "ImportReport",
    "ImportRow",
    "Issued",
    "NoBroker",
    "Onboarding",
    "RegistryStore",
    "RegistryView",
    "TlsFiles",
    "UnknownDevice",
    "acl_file_text",
    "auth_lines",
    "broker_reloader",
    "find_dynsec_plugin",
    "generate_password",
    "hash_password",
    "initial_config",
    "make_client_cert",
    "make_dev_ca",
    "make_server_cert",
    "mosquitto_password_line",
    "mqtt_username",
    "parse_csv",
    "parse_units",
    "tls_listener_lines",
    "verify_password",
    "write_private",
]
