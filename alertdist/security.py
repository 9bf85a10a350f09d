"""Who may read what: users, their roles, their SCRAM credentials, and the ACLs Kafka enforces for them.

ZTF data has owners: programme 1 is public, 2 belongs to the partnership, 3 to Caltech. A user has one role.
Service roles (`publisher`, `filter`, `archiver`, `replay`) each get only their part of a night (`night_acls`): the
publisher cannot create or delete topics or read any programme, a filter writes only its own outputs, the archiver
writes nothing; the admin, a super user of the cluster, creates topics, ACLs and users. Consumer roles read their
programmes' topics of each night, and the filter outputs derived from them, and may use only consumer groups whose id
starts with their user name and a dot (``alice.mygroup``: `user_namespace`; user names cannot contain a dot, so ``ann``
never reaches ``anna``'s groups). In the two-tier mode MirrorMaker 2's login has a role on each cluster (`mirror_source`
upstream, `mirror_target` downstream: `_mirror_acls`).

Why ACLs per night: topics are named ``<survey>_<YYYYMMDD>_programid<N>``, the date before the programme, so no
prefix covers one programme across nights. The users and their roles are therefore kept in the compacted
``<survey>_users`` topic (written by `alertdist users add`), and the topic-creation flow applies each new
night's ACLs from it (`secure_night`). Passwords are never stored there: Kafka keeps only salted SCRAM hashes.
Adding, changing and removing a user (its record, credential and standing ACLs) is `alertdist.users`'s job;
opening a night (its topics, then these ACLs) is the nights job's (`alertdist.jobs.nights.open_night`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from alertdist.kafka.clients import UNASSIGNED_GROUP, admin_client, scram_client_config
from alertdist.kafka.errors import KafkaOperationError
from alertdist.kafka.state_topic import KeyedStateTopic
from alertdist.nights.dates import format_night
from alertdist.nights.topics import (
    NAMESPACE_SEPARATOR,
    MirrorNames,
    TopicNaming,
    filter_login,
    user_namespace,
)

__all__ = [
    "ADMIN",
    "ARCHIVER",
    "MIRROR",
    "MIRROR_ROLES",
    "PUBLISHER",
    "REPLAY",
    "ROLES",
    "Role",
    "SecurityError",
    "User",
    "apply_night_acls",
    "check_user_name",
    "filter_service",
    "night_acls",
    "nights_with_topics",
    "read_users",
    "scram_client_config",
    "secure_night",
    "service_user",
    "user_acls",
    "users_topic",
]

#: matched whole (`re.fullmatch`: ``"alice\n"`` fails); no `NAMESPACE_SEPARATOR`, which ends a name in group ids
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
assert not _NAME.fullmatch(f"a{NAMESPACE_SEPARATOR}b")
#: the super users: ANONYMOUS on a PLAINTEXT listener, and on a cluster with none (`kafka_local`'s "secure-only"
#: mode) the admin, the brokers and the controllers; a SCRAM user of one of these names would be one too
_RESERVED_NAMES = {"ANONYMOUS", "admin", "broker", "controller"}
#: what the system itself names groups, transactional ids and topics after: no user name may be a prefix of one
_SYSTEM_NAMES = (
    "alertdist",
    MirrorNames().connect_group,
    MirrorNames().leader_transactional_id,
    MirrorNames().offset_syncs_topic,
    *MirrorNames().connect_topics,
)


class SecurityError(KafkaOperationError):
    """A user, credential or ACL could not be created, read or removed; the message says what to do."""


@dataclass(frozen=True)
class Role:
    """What a role may do: a service its own part of the night; a consumer reads its programmes only."""

    name: str
    programmes: tuple[int, ...] = ()
    service: bool = False
    description: str = ""


ROLES: dict[str, Role] = {
    "publisher": Role(
        "publisher", service=True, description="writes each night's programme and rejected topics and the nights topic"
    ),
    "filter": Role(
        "filter", service=True, description="reads its night's programme topics, writes only its own outputs and errors"
    ),
    "archiver": Role("archiver", service=True, description="reads each night's programme topics; writes nothing"),
    "replay": Role(
        "replay", service=True, description="writes a night's programme and rejected topics and the nights topic"
    ),
    # the mirror's login has one role on each cluster of the two-tier mode (`MIRROR_ROLES`)
    "mirror_source": Role(
        "mirror_source",
        service=True,
        description="MirrorMaker 2 on the producing cluster: reads the programme topics and the nights topic, "
        "keeps its offset syncs",
    ),
    "mirror_target": Role(
        "mirror_target",
        service=True,
        description="MirrorMaker 2 on the public cluster: creates and writes the mirrored topics, runs its Connect "
        "worker (topics, group, transactional ids)",
    ),
    "public": Role("public", (1,), description="reads programme 1 (public) topics"),
    "partnership": Role("partnership", (1, 2), description="reads programme 1 and 2 topics"),
    "caltech": Role("caltech", (1, 2, 3), description="reads programme 1, 2 and 3 topics"),
}

#: The services' own logins (the keys of `Settings.kafka_logins`; each is also its user's default name). The admin
#: is a super user of the cluster (`alertdist kafka start --secure-only`), so it needs no ACL and no role.
ADMIN, PUBLISHER, ARCHIVER, REPLAY, MIRROR = "admin", "publisher", "archiver", "replay", "mirror"
#: The mirror's role on the producing cluster and on the public one.
MIRROR_ROLES = ("mirror_source", "mirror_target")


def filter_service(filter_name: str) -> str:
    """The login (and default user name) of one filter's live runs (`topics.filter_login`)."""
    return filter_login(filter_name)


_FILTER_PREFIX = filter_login("")


def service_user(service: str, programmes: tuple[int, ...] = ()) -> User:
    """The user a service logs in as: named after the service, with the service's role (a filter's reading only
    ``programmes``, default every one)."""
    if service.startswith(_FILTER_PREFIX):
        return User(service, "filter", filter=service.removeprefix(_FILTER_PREFIX), programmes=programmes)
    return User(service, service)


@dataclass(frozen=True)
class User:
    """A registered user: its name (its Kafka principal is ``User:<name>``), its role and, for a filter, which."""

    name: str
    role: str
    created_at: str = ""
    filter: str = ""
    #: a filter's: the programmes its deployment reads (its ``programmes`` parameter); empty: every programme
    programmes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or self.name in _RESERVED_NAMES:
            raise SecurityError(
                f"user name {self.name!r} is not allowed: use 1-64 letters, digits, '_' or '-', starting with "
                f"a letter or digit (no '{NAMESPACE_SEPARATOR}': it ends the name in the user's group ids; and not "
                f"{', '.join(sorted(_RESERVED_NAMES))})"
            )
        if self.role not in ROLES:
            raise SecurityError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if (self.role == "filter") != bool(self.filter):
            raise SecurityError(f"user {self.name}: a filter's user names its filter (--filter), no other role does")
        _check_not_a_prefix(self.name, _SYSTEM_NAMES)
        if self.name.startswith(_FILTER_PREFIX) and self.name != filter_login(self.filter):
            raise SecurityError(
                f"user name {self.name!r} is not allowed: {_FILTER_PREFIX}<name> is the login of filter <name>'s "
                f"runs (role filter, --filter <name>), whose consumer groups are in its namespace"
            )
        object.__setattr__(self, "programmes", tuple(sorted({int(p) for p in self.programmes})))
        if self.programmes and self.role != "filter":
            raise SecurityError(f"user {self.name}: only a filter's user names its programmes (--programids)")

    @property
    def principal(self) -> str:
        return f"User:{self.name}"


def _check_not_a_prefix(name: str, names) -> None:
    system = next((s for s in names if s.startswith(name) or name.startswith(s)), None)
    if system is not None:
        raise SecurityError(
            f"user name {name!r} is not allowed: the system names its own topics, groups or transactional ids "
            f"{system!r}...; choose a name that neither starts such a name nor starts with it"
        )


def check_user_name(naming: TopicNaming, user: User) -> None:
    """Refuse a name that is a prefix of the survey's (``z``, ``ztf``), whose rights could reach its topics, and
    programmes the survey does not have."""
    _check_not_a_prefix(user.name, [naming.survey])
    unknown = sorted(set(user.programmes) - set(naming.programmes))
    if unknown:
        raise SecurityError(
            f"user {user.name}: programme(s) {unknown} unknown; this survey has {sorted(naming.programmes)}"
        )


def _readable(naming: TopicNaming, programmes: tuple[int, ...]) -> list[int]:
    """The survey's programmes among ``programmes`` (none named: every one)."""
    return [p for p in sorted(naming.programmes) if not programmes or p in programmes]


def users_topic(naming: TopicNaming) -> str:
    """The compacted topic holding each user's role (never a password)."""
    return f"{naming.survey}_users"


# ------------------------------------------------------------------------------------------------ the ACLs


def _allow(
    resource: ResourceType, name: str, pattern: ResourcePatternType, principal: str, operation: AclOperation
) -> AclBinding:
    return AclBinding(resource, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)


def _grants(
    principal: str,
    names: list[str],
    *operations: AclOperation,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    resource: ResourceType = ResourceType.TOPIC,
) -> list[AclBinding]:
    return [_allow(resource, n, pattern, principal, op) for n in names for op in operations]


def user_acls(naming: TopicNaming, user: User) -> list[AclBinding]:
    """The night-independent ACLs of a user: the nights topic for the services, its consumer groups for a reader.

    Every service reads the nights topic by assignment, with no group of its own; librdkafka looks up the
    coordinator of its placeholder group all the same, and stalls without DESCRIBE on it (which cannot commit)."""
    p, role = user.principal, user.role
    nights = naming.nights_topic

    def allow(resource, name, operation, pattern=ResourcePatternType.LITERAL):
        return _allow(resource, name, pattern, p, operation)

    if not ROLES[role].service:
        # READ on a group implies DESCRIBE; the namespace keeps users from joining (and disturbing) others' groups
        return [allow(ResourceType.GROUP, user_namespace(user.name), AclOperation.READ, ResourcePatternType.PREFIXED)]
    if role in MIRROR_ROLES:
        return _mirror_acls(user, [nights], standing=True)
    bindings = [
        allow(ResourceType.TOPIC, nights, AclOperation.READ),
        allow(ResourceType.GROUP, UNASSIGNED_GROUP, AclOperation.DESCRIBE),
    ]
    if role in ("publisher", "replay"):  # they open and close nights; idempotent producers
        bindings += [
            allow(ResourceType.TOPIC, nights, AclOperation.WRITE),
            allow(ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
        ]
    if role == "archiver":  # it reads each topic in a group of its own (`archive.stream.spool_topic`)
        archive_groups = f"alertdist-archive-{naming.survey}_"
        bindings.append(allow(ResourceType.GROUP, archive_groups, AclOperation.READ, ResourcePatternType.PREFIXED))
    return bindings


def night_acls(naming: TopicNaming, night: dt.date, user: User) -> list[AclBinding]:
    """What ``user`` may do with the topics of ``night``, whose names hold the date (so no prefix spans nights).

    A reader: READ on its programmes' topics, by a LITERAL ACL on ``<topic>`` plus a PREFIXED one on ``<topic>_``
    (filter outputs are ``<topic>_<filter>``), rather than one PREFIXED ``<topic>``, which would also match
    ``..._programid1`` + ``0``. A service: exactly its part of the night (see `ROLES`).
    """
    p, role = user.principal, user.role
    topics = list(naming.programme_topics(night).values())

    def each(names, *operations, **where):
        return _grants(p, names, *operations, **where)

    if role in ("publisher", "replay"):  # a replayed night goes through the publisher, rejections included
        return each([*topics, naming.rejected_topic(night)], AclOperation.WRITE)
    if role in MIRROR_ROLES:
        return _mirror_acls(user, topics, standing=False)
    if role == "archiver":
        return each(topics, AclOperation.READ)
    if role == "filter":  # only its deployment's programmes
        topics = list(naming.programme_topics(night, _readable(naming, user.programmes)).values())
        group = naming.filter_group(night, user.filter)
        outputs = [naming.filter_output_topic(t, user.filter) for t in topics]
        own = [*outputs, naming.filter_errors_topic(night, user.filter)]
        return [
            *each(topics, AclOperation.READ),
            *each(own, AclOperation.CREATE, AclOperation.WRITE, AclOperation.DESCRIBE_CONFIGS),
            *each([group], AclOperation.READ, resource=ResourceType.GROUP),
            # its copies' transactional ids are ``<group>-<copy>`` (`filters.live.transactional_id_for`)
            *each(
                [f"{group}-"],
                AclOperation.WRITE,
                resource=ResourceType.TRANSACTIONAL_ID,
                pattern=ResourcePatternType.PREFIXED,
            ),
        ]
    readable = [naming.programme_topic(night, i) for i in ROLES[role].programmes if i in naming.programmes]
    outputs = [naming.filter_output_topic(t, "") for t in readable]
    return [
        *each(readable, AclOperation.READ),
        *each(outputs, AclOperation.READ, pattern=ResourcePatternType.PREFIXED),
    ]


def _mirror_acls(user: User, mirrored: list[str], *, standing: bool) -> list[AclBinding]:
    """MirrorMaker 2's rights on the ``mirrored`` topics (the nights topic, or a night's programme topics) and, with
    ``standing`` (its night-independent rights), on its own topics, group and transactional ids. Exactly what it used
    against real brokers (their authorizer's log at DEBUG); its one denial, CREATE ``heartbeats`` on the public cluster,
    is of no consequence: heartbeats are off (`mirror.config`). WRITE implies IDEMPOTENT_WRITE: no cluster right."""
    names = MirrorNames()
    op = AclOperation

    def each(topics, *operations, **where):
        return _grants(user.principal, topics, *operations, **where)

    if user.role == "mirror_source":  # read the topics and their settings; write its offset syncs
        own = each([names.offset_syncs_topic], op.CREATE, op.WRITE) if standing else []
        return [*each(mirrored, op.READ, op.DESCRIBE_CONFIGS), *own]
    txn = ResourceType.TRANSACTIONAL_ID
    own = [  # the Connect worker: its topics, its group, its tasks' and its leader's transactional ids
        *each(names.connect_topics, op.CREATE, op.WRITE, op.READ, op.DESCRIBE_CONFIGS),
        *each([names.connect_group], op.READ, resource=ResourceType.GROUP),
        *each([names.connect_group], op.WRITE, resource=txn, pattern=ResourcePatternType.PREFIXED),
        *each([names.leader_transactional_id], op.WRITE, resource=txn),
    ]
    created = each(mirrored, op.CREATE, op.WRITE, op.ALTER_CONFIGS, op.DESCRIBE_CONFIGS)  # with the source's settings
    return [*created, *(own if standing else [])]


def _create_acls(admin: AdminClient, bindings: list[AclBinding], what: str, timeout: float) -> int:
    if not bindings:
        return 0
    try:
        futures = admin.create_acls(bindings, request_timeout=timeout)
    except KafkaException as e:
        raise SecurityError(f"creating ACLs {what} failed: {e.args[0].str()}") from e
    for binding, future in futures.items():
        try:
            future.result()
        except KafkaException as e:
            error = e.args[0]
            hint = ""
            if error.code() == KafkaError.SECURITY_DISABLED:
                hint = "; the cluster has no authorizer: start it with `alertdist kafka start --secure`"
            raise SecurityError(f"creating ACL {binding} {what} failed: {error.str()}{hint}") from e
    return len(bindings)


def apply_night_acls(
    admin: AdminClient, naming: TopicNaming, night: dt.date, users: list[User], *, timeout: float = 30.0
) -> int:
    """Grant every registered user its rights on the topics of ``night`` (`night_acls`); returns the ACLs applied.

    Idempotent: Kafka keeps an ACL once however often it is created.
    """
    bindings = [b for user in users for b in night_acls(naming, night, user)]
    return _create_acls(admin, bindings, f"for night {format_night(night)}", timeout)


def nights_with_topics(admin: AdminClient, naming: TopicNaming, *, timeout: float = 30.0) -> list[dt.date]:
    """Every night that has a programme topic on the cluster now."""
    pattern = re.compile(rf"^{re.escape(naming.survey)}_(\d{{8}})_programid\d+$")
    nights = set()
    for topic in admin.list_topics(timeout=timeout).topics:
        match = pattern.match(topic)
        if match:
            try:
                nights.add(dt.datetime.strptime(match.group(1), "%Y%m%d").date())
            except ValueError:
                continue
    return sorted(nights)


# ------------------------------------------------------------------------------------- the users topic


def read_users(bootstrap_servers: str, naming: TopicNaming, *, timeout: float = 30.0) -> list[User]:
    """Every registered user (the latest record per name), sorted by name; [] when none was ever added."""
    try:
        records = KeyedStateTopic(bootstrap_servers, users_topic(naming)).latest(timeout=timeout)
    except KafkaOperationError as e:
        raise SecurityError(f"reading users: {e}", transient=e.transient) from e
    users = []
    for name, body in records.items():
        try:
            users.append(User(**body))
        except (SecurityError, TypeError, ValueError) as e:
            raise SecurityError(
                f"the record of user {name!r} in {users_topic(naming)} is not valid ({e}): remove it with "
                f"`alertdist users remove {name}` and add the user again under an allowed name"
            ) from e
    return sorted(users, key=lambda u: u.name)


def secure_night(bootstrap_servers: str, naming: TopicNaming, night: dt.date, *, timeout: float = 30.0) -> int:
    """Apply the night's ACLs for every registered user: the call the topic-creation flow makes per night.

    A cluster with no registered user (the simple embedded one) needs no ACLs: returns 0 without asking for any.
    """
    users = read_users(bootstrap_servers, naming, timeout=timeout)
    if not users:
        return 0
    return apply_night_acls(admin_client(bootstrap_servers), naming, night, users, timeout=timeout)
