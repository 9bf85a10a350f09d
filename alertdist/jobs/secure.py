"""The services' own logins on a secured cluster: one user per service, its role's ACLs, a password kept as a secret.

`alertdist night --secure` (and an operator setting up a deployment) registers every service once; the passwords
are generated here, kept in 0600 files beside the cluster's own secrets, and handed to the services only through
the environment (`Settings.kafka_logins`), never as a flow parameter.

In the two-tier mode each cluster knows only its own users (`two_tier_users`): the producing cluster the publisher
and the mirror, the public cluster the mirror, the archiver and the filters (and the readers, `alertdist users add
--public`). The mirror has one password and a role on each side.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from alertdist.filters import available_filters
from alertdist.security import (
    ADMIN,
    ARCHIVER,
    MIRROR,
    PUBLISHER,
    REPLAY,
    User,
    filter_service,
    service_user,
)
from alertdist.settings import Settings, login_variable
from alertdist.users import add_user

__all__ = ["register_filters", "register_services", "register_two_tier_services", "services", "two_tier_users"]


def _filters() -> list[str]:
    return [filter_service(name) for name in sorted(available_filters())]


def services() -> list[str]:
    """Every service that logs in: the publisher, the archiver, replay, and each bundled filter."""
    return [PUBLISHER, ARCHIVER, REPLAY, *_filters()]


def two_tier_users() -> dict[bool, list[User]]:
    """The services' users of each cluster of the two-tier mode (key: on the public cluster)."""
    return {
        False: [service_user(PUBLISHER), User(MIRROR, "mirror_source")],
        True: [User(MIRROR, "mirror_target"), service_user(ARCHIVER), *map(service_user, _filters())],
    }


def _password(secrets_dir: Path, service: str) -> str:
    path = secrets_dir / f"{service}.password"
    if not path.is_file():
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _register(admin: str, settings: Settings, users: list[User], secrets_dir: Path, *, public: bool) -> dict[str, str]:
    env = {}
    for user in users:
        password = _password(secrets_dir, user.name)
        add_user(admin, settings.naming, user, password)
        env[login_variable(user.name, public=public)] = password
    return env


def register_services(settings: Settings, secrets_dir: Path) -> dict[str, str]:
    """Register (idempotently) each service's user as the admin; return the environment that gives each its login.

    A password is generated once per service into ``secrets_dir/<service>.password`` and reused after.
    """
    return _register(settings.kafka(ADMIN), settings, [service_user(s) for s in services()], secrets_dir, public=False)


def register_filters(
    settings: Settings, names: list[str], secrets_dir: Path, *, public: bool = False
) -> dict[str, str]:
    """`register_services` for plug-in filters started by name (``NAME=package.module:function``): each its user
    ``filter_NAME``, registered by the admin of its cluster (the public one in the two-tier mode)."""
    admin = settings.public_kafka(ADMIN) if public else settings.kafka(ADMIN)
    users = [service_user(filter_service(name)) for name in names]
    return _register(admin, settings, users, secrets_dir, public=public)


def register_two_tier_services(settings: Settings, secrets_dir: Path) -> dict[str, str]:
    """`register_services` for the two-tier mode: each cluster's own service users (`two_tier_users`), each
    registered by that cluster's admin; the environment gives each its login on its cluster."""
    env = {}
    for public, users in two_tier_users().items():
        admin = settings.public_kafka(ADMIN) if public else settings.kafka(ADMIN)
        env.update(_register(admin, settings, users, secrets_dir, public=public))
    return env
