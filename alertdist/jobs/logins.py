"""Who gets which Kafka login: each process one, its own service's, and no process any other.

The secured night keeps every service's login in the environment of the process that runs it (`Settings` reads
them there). Every process it starts inherits that environment, so it starts them with the logins taken out
(`logins_out_of_environment`: the brokers, the Prefect server, MirrorMaker 2, the stage processes) and hands each
stage its own service's login only (`stage_logins`), never as a flow parameter.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pydantic import SecretStr

from alertdist.settings import Settings, login_variable

__all__ = ["is_login", "logins_out_of_environment", "stage_logins", "use_logins"]


def is_login(variable: str) -> bool:
    """Whether an environment variable holds Kafka logins (`Settings.kafka_logins`, either cluster's; the settings
    read the environment without regard to case)."""
    return variable.upper().startswith(("ALERTDIST_KAFKA_LOGINS", "ALERTDIST_PUBLIC_KAFKA_LOGINS"))


def stage_logins(settings: Settings, service: str, *, public: bool = False) -> dict[str, SecretStr]:
    """The environment that gives one stage its service's login and nothing else (none on an open cluster)."""
    login = (settings.public_kafka_logins if public else settings.kafka_logins).get(service)
    if login is None:
        return {}
    env = {login_variable(service, public=public): login.password}
    if login.user:
        env[login_variable(service, "user", public=public)] = SecretStr(login.user)
    return env


def use_logins(logins: dict[str, SecretStr]) -> None:
    """This process's environment with ``logins`` as its only Kafka logins (a pool process may have run another
    stage before)."""
    for variable in [v for v in os.environ if is_login(v)]:
        del os.environ[variable]
    os.environ.update({variable: value.get_secret_value() for variable, value in logins.items()})


@contextlib.contextmanager
def logins_out_of_environment() -> Iterator[None]:
    """No Kafka login in this process's environment inside the block (what a process started then inherits);
    they are back after it."""
    saved = {variable: value for variable, value in os.environ.items() if is_login(variable)}
    for variable in saved:
        del os.environ[variable]
    try:
        yield
    finally:
        os.environ.update(saved)
