"""Adding, changing and removing users: their record in the users topic, their SCRAM-SHA-512 credential, and
their standing ACLs, each step checked until a broker enforces it.

What a role may do, and a night's ACLs for every registered user, are `alertdist.security`'s: this module only
writes them for one user at a time. Passwords are never stored: Kafka keeps only salted SCRAM hashes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, replace

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from alertdist.kafka.clients import admin_client
from alertdist.kafka.errors import KafkaOperationError, retry_until
from alertdist.kafka.state_topic import KeyedStateTopic
from alertdist.nights.topics import TopicNaming, create_topics, replication_for
from alertdist.security import (
    SecurityError,
    User,
    _create_acls,
    check_user_name,
    night_acls,
    nights_with_topics,
    read_users,
    user_acls,
    users_topic,
)

__all__ = ["add_user", "remove_user", "set_password"]

SCRAM_ITERATIONS = 8192  # Kafka accepts 4096..16384 for SHA-512


def _ensure_users_topic(admin: AdminClient, naming: TopicNaming) -> None:
    replication = replication_for(admin, None)
    configs = {"cleanup.policy": "compact", "min.insync.replicas": "2" if replication >= 3 else "1"}
    create_topics(admin, {users_topic(naming): (1, replication, configs)})


def _record_user(bootstrap_servers: str, naming: TopicNaming, name: str, user: User | None, timeout: float) -> None:
    """Write (or with None, delete) a user's record and wait for Kafka's acknowledgement."""
    record = None if user is None else asdict(user)
    try:
        KeyedStateTopic(bootstrap_servers, users_topic(naming)).put(name, record, timeout=timeout)
    except KafkaOperationError as e:
        raise SecurityError(f"recording user {name} in {users_topic(naming)} failed: {e}", transient=e.transient) from e


def add_user(bootstrap_servers: str, naming: TopicNaming, user: User, password: str, *, timeout: float = 30.0) -> int:
    """Register ``user``: its role record, its SCRAM-SHA-512 credential, and its ACLs for every existing night.

    The record is written first, so a failure later leaves an intent that re-running (safe: every step is
    an upsert) completes. Returns the number of ACLs applied. ``bootstrap_servers`` must reach the cluster as a
    super user (the admin's login, `Settings.kafka(ADMIN)`, or the loopback PLAINTEXT listener).
    """
    check_user_name(naming, user)
    _check_password(user.name, password)
    admin = admin_client(bootstrap_servers)
    _ensure_users_topic(admin, naming)
    before = {u.name: u for u in read_users(bootstrap_servers, naming, timeout=timeout)}.get(user.name)
    since = user.created_at or (before.created_at if before else dt.datetime.now(dt.UTC).isoformat())
    stamped = replace(user, created_at=since)
    _record_user(bootstrap_servers, naming, user.name, stamped, timeout)
    _set_credential(admin, user.name, password, timeout, "run `alertdist users add` again")
    bindings = user_acls(naming, stamped)
    for night in nights_with_topics(admin, naming, timeout=timeout):
        bindings += night_acls(naming, night, stamped)
    applied = _create_acls(admin, bindings, f"for user {user.name}", timeout)
    # a changed role, filter or programmes must not keep the old rights: whatever else names it goes
    _delete_unwanted_acls(admin, user.name, bindings, timeout)
    _wait_until_enforced(admin, user.name, bindings, timeout)
    return applied


def _delete_unwanted_acls(admin: AdminClient, name: str, wanted: list[AclBinding], timeout: float) -> int:
    keep = {_key(b) for b in wanted}
    try:
        present = admin.describe_acls(_principal_filter(name), request_timeout=timeout).result()
    except KafkaException as e:
        raise SecurityError(f"reading the ACLs of {name} failed: {e.args[0].str()}; add the user again") from e
    unwanted = [_exactly(b) for b in present if _key(b) not in keep]
    if not unwanted:
        return 0
    try:
        futures = admin.delete_acls(unwanted, request_timeout=timeout)
        return sum(len(f.result()) for f in futures.values())
    except KafkaException as e:
        raise SecurityError(f"deleting the old ACLs of {name} failed: {e.args[0].str()}; add the user again") from e


def _principal_filter(name: str) -> AclBindingFilter:
    """Every ACL naming ``User:<name>``."""
    return AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{name}", None, AclOperation.ANY, AclPermissionType.ANY
    )


def _exactly(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def _check_password(name: str, password: str) -> None:
    if len(password) < 12:
        raise SecurityError(f"the password for {name} is too short: use at least 12 characters")


def _set_credential(admin: AdminClient, name: str, password: str, timeout: float, retry: str) -> None:
    credential = UserScramCredentialUpsertion(
        name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), password.encode()
    )
    try:
        admin.alter_user_scram_credentials([credential], request_timeout=timeout)[name].result()
    except KafkaException as e:
        raise SecurityError(f"setting the SCRAM-SHA-512 credential of {name} failed: {e.args[0].str()}; {retry}") from e


def set_password(bootstrap_servers: str, name: str, password: str, *, timeout: float = 30.0) -> None:
    """Replace the SCRAM-SHA-512 password of user ``name`` (a service's, a reader's or the admin's own).

    The brokers take the new credential from the cluster's metadata as they run: no restart; every new login
    needs the new password, and sessions already open must log in again within ``connections.max.reauth.ms``
    (a minute, `kafka_local.REAUTH_MS`). Its role and ACLs are untouched.
    """
    _check_password(name, password)
    admin = admin_client(bootstrap_servers)
    try:
        admin.describe_user_scram_credentials([name], request_timeout=timeout)[name].result()
    except KafkaException as e:
        if e.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
            raise SecurityError(f"user {name} has no credential to change: add it with `alertdist users add`") from e
        raise SecurityError(f"reading the credential of {name} failed: {e.args[0].str()}") from e
    _set_credential(admin, name, password, timeout, "run `alertdist users passwd` again")


def _wait_until_enforced(admin: AdminClient, name: str, bindings: list[AclBinding], timeout: float) -> None:
    """Wait until a broker serves the new credential and ACLs: the controller commits them, brokers apply them
    a moment later, and a user told "added" should not be refused in between."""
    retry_until(
        f"waiting for the rights of {name}",
        _enforced,
        admin,
        name,
        {_key(b) for b in bindings},
        timeout,
        timeout_s=timeout,
    )


def _enforced(admin: AdminClient, name: str, wanted: set[tuple], timeout: float) -> None:
    """Return if a broker serves the credential and every wanted ACL of ``name``; raise (transient) if not yet."""
    try:
        admin.describe_user_scram_credentials([name], request_timeout=timeout)[name].result()
        if wanted == {_key(b) for b in admin.describe_acls(_principal_filter(name), request_timeout=timeout).result()}:
            return
    except KafkaException as e:
        if e.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
            raise SecurityError(f"checking the credential and ACLs of {name}: {e.args[0].str()}") from e
    raise SecurityError(
        f"the credential and ACLs of {name} were accepted but no broker served them within "
        f"{timeout:.0f} s; check `alertdist kafka status`, then add the user again",
        transient=True,
    )


def _key(binding: AclBinding) -> tuple:
    return (
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.operation,
        binding.permission_type,
    )


def remove_user(bootstrap_servers: str, naming: TopicNaming, name: str, *, timeout: float = 30.0) -> int:
    """Delete a user's credential, every ACL naming its principal, and its record; returns ACLs deleted."""
    admin = admin_client(bootstrap_servers)
    deletion = UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)
    try:
        admin.alter_user_scram_credentials([deletion], request_timeout=timeout)[name].result()
    except KafkaException as e:
        if e.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
            raise SecurityError(f"deleting the SCRAM credential of {name} failed: {e.args[0].str()}") from e
    deleted = _delete_acls(admin, name, timeout)
    _record_user(bootstrap_servers, naming, name, None, timeout)
    return deleted


def _delete_acls(admin: AdminClient, name: str, timeout: float) -> int:
    everything = _principal_filter(name)
    try:
        return len(admin.delete_acls([everything], request_timeout=timeout)[everything].result())
    except KafkaException as e:
        raise SecurityError(f"deleting the ACLs of {name} failed: {e.args[0].str()}") from e
