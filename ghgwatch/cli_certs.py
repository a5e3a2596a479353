"""``ghgwatch certs``: a development CA, the broker's certificate and client certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry import CertFiles, make_client_cert, make_dev_ca, make_server_cert

__all__ = ["certs"]


def certs(
    out: Annotated[Path, typer.Option(help="folder for the CA, server and client files")] = Path(
        ".ghgwatch/tls"
    ),
    host: Annotated[
        list[str] | None,
        typer.Option(help="broker host name or address (repeat); default localhost, 127.0.0.1"),
    ] = None,
    client: Annotated[
        list[str] | None, typer.Option(help="client certificate for this MQTT username (repeat)")
    ] = None,
) -> None:
    """Make a development CA (kept if present), a server certificate and client certificates.

    Then: ``ghgwatch up --tls``, or a listener 8883 with cafile ca.crt, certfile server.crt,
    keyfile server.key; clients trust ca.crt (``mosquitto_pub --cafile``, ``SSL_CERT_FILE``).
    With ``require_certificate true`` (``up --tls --require-client-cert``) a client also
    presents its clients/NAME.crt and .key (``mosquitto_pub --cert --key``).
    """
    ca = CertFiles(out / "ca.crt", out / "ca.key")
    if ca.cert.exists() and ca.key.exists():
        typer.echo(f"using the CA in {out}")
    else:
        ca = make_dev_ca(out)
        typer.echo(f"new development CA: {ca.cert}")
    server = make_server_cert(ca, out, host or ["localhost", "127.0.0.1"])
    typer.echo(f"server certificate: {server.cert} (key {server.key})")
    for name in client or []:
        files = make_client_cert(ca, out / "clients", name)
        typer.echo(f"client certificate for {name}: {files.cert} (key {files.key})")
