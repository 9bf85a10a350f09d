"""`alertdist users add|list|passwd|remove`: who may read which programmes, enforced by Kafka's ACLs."""

from __future__ import annotations

import argparse
import getpass
import sys

from alertdist.cli import parsing
from alertdist.security import ROLES

ROLES_HELP = """\
roles:
  publisher             the publisher service: writes each night's programme and rejected topics, the nights topic
  filter                one filter's live runs (--filter NAME): reads the night, writes only its own outputs
  archiver              the archiver service: reads each night's programme topics, writes nothing
  replay                replay into a night: writes its programme topics and the nights topic
  public                reads programme 1 topics (and filter outputs derived from them)
  partnership           reads programme 1 and 2 topics
  caltech               reads programme 1, 2 and 3 topics
  mirror_source         MirrorMaker 2 on the producing cluster: reads what it mirrors, writes its offset syncs
  mirror_target         MirrorMaker 2 on the public cluster: creates and writes the mirrored topics, its Connect topics
A consumer may use only consumer groups whose id starts with its user name and a dot (e.g. alice.mygroup);
user names cannot contain a dot, nor begin the survey's, alertdist's or MirrorMaker's own names.
A filter's user reads only the programmes of its deployment (--programids, default every programme).
Two-tier mode: readers, filters and the archiver live on the public cluster (--public, as its admin:
ALERTDIST_PUBLIC_KAFKA_LOGINS__ADMIN__PASSWORD, ALERTDIST_PUBLIC_KAFKA_CA); the producing cluster has only the
publisher and the mirror.

The user connects to the cluster's SCRAM-SHA-512 listener (see `alertdist kafka start --secure`) with
  security.protocol=SASL_PLAINTEXT (or SASL_SSL with ssl.ca.location=<data-dir>/certs/ca.pem)
  sasl.mechanism(s)=SCRAM-SHA-512, sasl.username=NAME, sasl.password=...
These commands themselves talk to the cluster as its admin: the loopback PLAINTEXT listener's super user, or on
a cluster with none the admin login (ALERTDIST_KAFKA_LOGINS__ADMIN__PASSWORD, ALERTDIST_KAFKA_CA).
"""


def _admin(args, settings) -> str:
    """The cluster the command acts on, as its admin: the producing one, or with --public the public one."""
    from alertdist.security import ADMIN

    return settings.public_kafka(ADMIN) if args.public else settings.kafka(ADMIN)


def _password(args) -> str:
    """From stdin (one line) with --password-stdin, else asked twice on the terminal; never on the command line."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ValueError("--password-stdin given but stdin held no password line")
        return password
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the password on: pipe it in with --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def _add(args, settings):
    """Create a user, or change its password or role (re-running is safe). Applies the role's ACLs to every night whose
    topics exist; each new night's are applied when its topics are created."""
    from alertdist.security import User
    from alertdist.users import add_user

    programmes = tuple(args.programmes or ())
    user = User(args.name, args.role, filter=args.filter or "", programmes=programmes)  # checked before the password
    applied = add_user(_admin(args, settings), settings.naming, user, _password(args))
    print(
        f"user {user.name} ({user.role}) added: SCRAM-SHA-512 credential set, {applied} ACL(s) applied "
        "(new nights get theirs when their topics are created)"
    )


def _list(args, settings):
    from alertdist.security import read_users

    users = read_users(_admin(args, settings), settings.naming)
    if not users:
        print("no users registered (add one with `alertdist users add NAME --role ROLE`)")
        return
    width = max(len(u.name) for u in users)
    for user in users:
        role = ROLES[user.role]
        scope = (
            f" [filter {user.filter}, programmes {','.join(map(str, user.programmes)) or 'all'}]" if user.filter else ""
        )
        print(f"{user.name:<{width}}  {user.role:<11}  {role.description}{scope}  (since {user.created_at[:19]})")


def _remove(args, settings):
    from alertdist.users import remove_user

    deleted = remove_user(_admin(args, settings), settings.naming, args.name)
    print(f"user {args.name} removed: credential deleted, {deleted} ACL(s) deleted")


def _passwd(args, settings):
    """A new password for a user (a service's, a reader's or the admin's): the brokers take it at once, no restart;
    every login after it needs the new one (update the service's ALERTDIST_KAFKA_LOGINS__<SERVICE>__PASSWORD)."""
    from alertdist.users import set_password

    set_password(_admin(args, settings), args.name, _password(args))
    print(
        f"password of {args.name} changed (no broker restart; sessions already open must log in again within a minute)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser(
        "users",
        help="add, list or remove the users allowed to read the streams (SCRAM + ACLs)",
        description=__doc__,
        epilog=ROLES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = parsing.command(
        actions,
        "add",
        _add,
        "create or update a user: its SCRAM-SHA-512 credential and its role's ACLs",
        epilog=ROLES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        kafka=True,
    )
    add.add_argument("name", help="user name (its consumer groups must start with it and a dot)")
    add.add_argument(
        "--role",
        required=True,
        choices=list(ROLES),  # the roles alertdist.security grants, named in one place
        help="what the user may read (see below)",
    )
    add.add_argument("--filter", metavar="NAME", help="with --role filter: the filter whose runs log in as this user")
    parsing.term_option(
        add,
        "programmes",
        "with --role filter: the programmes its deployment reads (its `programmes` parameter; default: all)",
        dest="programmes",
        type=parsing.programme_ids,
    )
    stdin_help = "read the password from the first line of stdin (else it is asked on the terminal)"
    add.add_argument("--password-stdin", action="store_true", help=stdin_help)

    passwd = parsing.command(actions, "passwd", _passwd, "change a user's password (no broker restart)", kafka=True)
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help=stdin_help)

    listing = actions.add_parser("list", help="list registered users and their roles")
    listing.set_defaults(run=_list)

    remove = actions.add_parser("remove", help="delete a user's credential, ACLs and record")
    remove.add_argument("name")
    remove.set_defaults(run=_remove)
    for each in (add, passwd, listing, remove):
        each.add_argument(
            "--public", action="store_true", help="on the public cluster of the two-tier mode (its own users)"
        )
