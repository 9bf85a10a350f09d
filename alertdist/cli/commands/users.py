"""`alertdist users add|list|remove`: who may read which programmes, enforced by Kafka's ACLs."""

from __future__ import annotations

import argparse
import getpass
import sys

from alertdist.cli import parsing

ROLES_HELP = """\
roles:
  publisher, archiver   the system's services: read and write every topic of the survey, any group
  public                reads programme 1 topics (and filter outputs derived from them)
  partnership           reads programme 1 and 2 topics
  caltech               reads programme 1, 2 and 3 topics
A consumer may use only consumer groups whose id starts with its user name (e.g. alice-mygroup).

The user connects to the cluster's SCRAM-SHA-512 listener (see `alertdist kafka start --secure`) with
  security.protocol=SASL_PLAINTEXT (or SASL_SSL with ssl.ca.location=<data-dir>/certs/ca.pem)
  sasl.mechanism(s)=SCRAM-SHA-512, sasl.username=NAME, sasl.password=...
These commands themselves talk to the cluster as its super user, through the loopback PLAINTEXT listener.
"""


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
    from alertdist.security import User, add_user

    user = User(args.name, args.role)  # validates name and role before asking for a password
    applied = add_user(settings.bootstrap_servers, settings.naming, user, _password(args))
    print(
        f"user {user.name} ({user.role}) added: SCRAM-SHA-512 credential set, {applied} ACL(s) applied "
        "(new nights get theirs when their topics are created)"
    )


def _list(args, settings):
    from alertdist.security import ROLES, read_users

    users = read_users(settings.bootstrap_servers, settings.naming)
    if not users:
        print("no users registered (add one with `alertdist users add NAME --role ROLE`)")
        return
    width = max(len(u.name) for u in users)
    for user in users:
        role = ROLES[user.role]
        print(f"{user.name:<{width}}  {user.role:<11}  {role.description}  (since {user.created_at[:19]})")


def _remove(args, settings):
    from alertdist.security import remove_user

    deleted = remove_user(settings.bootstrap_servers, settings.naming, args.name)
    print(f"user {args.name} removed: credential deleted, {deleted} ACL(s) deleted")


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
    add.add_argument("name", help="user name (its consumer groups must start with it)")
    add.add_argument(
        "--role",
        required=True,
        choices=["publisher", "archiver", "public", "partnership", "caltech"],
        help="what the user may read (see below)",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (else it is asked on the terminal)",
    )

    listing = actions.add_parser("list", help="list registered users and their roles")
    listing.set_defaults(run=_list)

    remove = actions.add_parser("remove", help="delete a user's credential, ACLs and record")
    remove.add_argument("name")
    remove.set_defaults(run=_remove)
