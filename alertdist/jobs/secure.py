"""The services' own logins on a secured cluster: one user per service, its role's ACLs, a password kept as a secret.

`alertdist night --secure` (and an operator setting up a deployment) registers every service once; the passwords
are generated here, kept in 0600 files beside the cluster's own secrets, and handed to the services only through
the environment (`Settings.kafka_logins`), never as a flow parameter.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from alertdist.filters import available_filters
from alertdist.security import ADMIN, ARCHIVER, PUBLISHER, REPLAY, add_user, filter_service, service_user
from alertdist.settings import Settings, login_variable

__all__ = ["register_services", "services"]


def services() -> list[str]:
    """Every service that logs in: the publisher, the archiver, replay, and each bundled filter."""
    return [PUBLISHER, ARCHIVER, REPLAY, *(filter_service(name) for name in sorted(available_filters()))]


def _password(secrets_dir: Path, service: str) -> str:
    path = secrets_dir / f"{service}.password"
    if not path.is_file():
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def register_services(settings: Settings, secrets_dir: Path) -> dict[str, str]:
    """Register (idempotently) each service's user as the admin; return the environment that gives each its login.

    A password is generated once per service into ``secrets_dir/<service>.password`` and reused after.
    """
    admin = settings.kafka(ADMIN)
    env = {}
    for service in services():
        password = _password(secrets_dir, service)
        add_user(admin, settings.naming, service_user(service), password)
        env[login_variable(service)] = password
    return env
