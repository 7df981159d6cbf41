"""``python -m jobs accounts``: accounts, their members and API keys, straight in the job store.

    python -m jobs accounts create NAME                        # a new account (a studio, an app)
    python -m jobs accounts list
    python -m jobs accounts set-weight NAME W                  # its fair share of GPU time (default 1)
    python -m jobs accounts set-limits NAME --max-running N --daily-images N   # quotas ("none": no limit)
    python -m jobs accounts set-retention NAME --results-days N --inputs-days N  # days kept ("none": the service's)
    python -m jobs accounts add-member NAME USER [--role admin|member]
    python -m jobs accounts remove-member NAME USER
    python -m jobs accounts members NAME
    python -m jobs accounts set-password NAME USER             # browser sign-in; read from the terminal or stdin
    python -m jobs accounts create-key NAME --scope generate [--scope history] [--label TEXT]
    python -m jobs accounts list-keys NAME                     # prefixes, scopes, last use; never the keys
    python -m jobs accounts revoke-key PREFIX                  # refused by every jobs service within 5 s

The store is the jobs service's: ``PORTRAIT_JOBS_STORE_URL`` (the environment, never a flag, as it may hold a
password), else the SQLite file in ``--run-dir``. ``set-password`` reads the password from the terminal (asked
twice, not shown) or, piped, the first line of stdin: never from the command line. ``create-key`` prints the new
key alone on stdout, once: it is generated here, never read from the command line, and the store keeps only its
SHA-256. Exit status: 0 done, 1 refused (no such account, key or member; a name taken), 2 bad usage; errors are
one line on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import OperationalError

from jobs.contract import ROLES, SCOPES
from jobs.errors import JobsError
from jobs.settings import JobsSettings
from jobs.store import (
    ApiKey,
    add_member,
    create_account,
    create_key,
    list_accounts,
    list_keys,
    make_engine,
    members,
    remove_member,
    revoke_key,
    set_limits,
    set_retention,
    set_weight,
    upgrade,
)
from jobs.store.passwords import set_password

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m jobs accounts", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--run-dir", type=Path, default=None, help="The jobs service's run directory (SQLite store).")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="a new account").add_argument("name")
    commands.add_parser("list", help="every account")
    weight = commands.add_parser("set-weight", help="an account's fair share of GPU time (default 1)")
    weight.add_argument("name")
    weight.add_argument("weight", type=float, help="2: twice the GPU time of an account of weight 1 when both wait")
    limits = commands.add_parser("set-limits", help="an account's quotas (both: none when not given)")
    limits.add_argument("name")
    limits.add_argument("--max-running", type=limit, default=None, metavar="N|none",
                        help="most jobs queued or running at once")
    limits.add_argument("--daily-images", type=limit, default=None, metavar="N|none",
                        help="most images per UTC day (resets at 00:00 UTC)")
    retention = commands.add_parser("set-retention", help="how long an account's jobs and photos are kept")
    retention.add_argument("name")
    retention.add_argument("--results-days", type=limit, default=None, metavar="N|none",
                           help="days its jobs and results are kept (none: the service's --retention-days)")
    retention.add_argument("--inputs-days", type=limit, default=None, metavar="N|none",
                           help="days its finished jobs keep their input photo (none: as long as the job)")
    for name, text in (("add-member", "make USER a member"), ("remove-member", "USER is no longer a member")):
        command = commands.add_parser(name, help=text)
        command.add_argument("name")
        command.add_argument("user")
        if name == "add-member":
            command.add_argument("--role", choices=ROLES, default="member")
    commands.add_parser("members", help="an account's members").add_argument("name")
    password = commands.add_parser("set-password", help="a member's browser sign-in password (asked, never an "
                                   "argument)")
    password.add_argument("name")
    password.add_argument("user")
    create = commands.add_parser("create-key", help="a new API key, printed once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True, help="repeat for several")
    create.add_argument("--label", default=None, help="what the key is for")
    commands.add_parser("list-keys", help="an account's keys (never the keys themselves)").add_argument("name")
    commands.add_parser("revoke-key", help="refuse a key from now on").add_argument("prefix")
    return top


def limit(text: str) -> int | None:
    """A limit on the command line: a whole number, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or none, not {text!r}") from None


def read_password(stdin: TextIO | None = None) -> str:
    """The new password: asked twice on a terminal (not echoed), else the first line of ``stdin`` (this process's
    standard input when None)."""
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        return stdin.readline().rstrip("\r\n")
    password = getpass.getpass("New sign-in password: ")
    if getpass.getpass("The same again: ") != password:
        raise ValueError("the two passwords differ; nothing was changed")
    return password


def shown(value: int | None, none: str = "no limit") -> str:
    return none if value is None else str(value)


def key_line(key: ApiKey) -> str:
    used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    return f"{key.prefix}…  {','.join(key.scopes):<24} last used {used:<16}  {state}  {key.label or ''}".rstrip()


def run(args: argparse.Namespace) -> None:
    """Carry out one command, printing what it did."""
    settings = JobsSettings(**({"run_dir": args.run_dir} if args.run_dir else {}))
    url = settings.resolved_store_url()
    if url.startswith("sqlite:///"):
        settings.run_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    try:
        if args.command == "create":
            account = create_account(engine, args.name)
            print(f"account {account.name} created ({account.id})")
        elif args.command == "list":
            for account in list_accounts(engine):
                print(f"{account.name}  {account.id}  weight {account.weight:g}  "
                      f"max running {shown(account.max_running)}  daily images {shown(account.daily_images)}  "
                      f"results days {shown(account.results_days, 'default')}  "
                      f"photo days {shown(account.inputs_days, 'default')}  "
                      f"created {account.created_at:%Y-%m-%d %H:%M}")
        elif args.command == "set-weight":
            account = set_weight(engine, args.name, args.weight)
            print(f"account {account.name}: weight {account.weight:g}")
        elif args.command == "set-limits":
            account = set_limits(engine, args.name, args.max_running, args.daily_images)
            print(f"account {account.name}: max running {shown(account.max_running)}, "
                  f"daily images {shown(account.daily_images)}")
        elif args.command == "set-retention":
            account = set_retention(engine, args.name, args.results_days, args.inputs_days)
            print(f"account {account.name}: results kept {shown(account.results_days, 'the default')} days, "
                  f"input photos {shown(account.inputs_days, 'as long as their job')} days")
        elif args.command == "add-member":
            add_member(engine, args.name, args.user, args.role)
            print(f"{args.user} is a member of {args.name} ({args.role})")
        elif args.command == "remove-member":
            remove_member(engine, args.name, args.user)
            print(f"{args.user} is no longer a member of {args.name}")
        elif args.command == "members":
            for member in members(engine, args.name):
                print(f"{member.user}  {member.role}")
        elif args.command == "set-password":
            set_password(engine, args.name, args.user, read_password())
            print(f"{args.user} of {args.name} has a new sign-in password; their earlier browser sessions end")
        elif args.command == "create-key":
            key, secret = create_key(engine, args.name, args.scope, args.label)
            print(f"API key {key.prefix}… for {args.name} ({', '.join(key.scopes)}). It is shown only now: "
                  "keep it in a secret store; lost, it cannot be shown again (revoke it and create another).",
                  file=sys.stderr)
            print(secret)
        elif args.command == "list-keys":
            for key in list_keys(engine, args.name):
                print(key_line(key))
        elif args.command == "revoke-key":
            key = revoke_key(engine, args.prefix)
            print(f"API key {key.prefix}… of {key.account} revoked: every jobs service refuses it within 5 s")
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except (JobsError, ValueError) as error:
        print(f"python -m jobs accounts: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except OperationalError as error:
        print(f"python -m jobs accounts: the job store does not answer: {str(error.orig).splitlines()[0]}",
              file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
