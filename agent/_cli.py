"""The ``invoice-sync-agent`` command line (also ``python -m agent``)."""

from __future__ import annotations

import argparse
import enum
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from agent._client import Client, check_date
from agent._config import CONFIG_ENV, ENV_PREFIX, NUMBER_ON_CHOICES, Config
from agent._exceptions import (
    ConfigError,
    CoordinatorError,
    CoordinatorRefused,
    JournalError,
    NumberWentBackwards,
)
from agent._models import DOCUMENTS

log = logging.getLogger("agent")


class ExitCode(enum.IntEnum):
    """What ``invoice-sync-agent`` exits with; scripts may rely on these.

    ``OK`` (0): done; for ``next`` the number was printed.
    ``INTERNAL`` (1): a bug in the agent (the traceback goes to stderr).
    ``USAGE`` (2): bad command line or bad input (nothing was sent).
    ``UNAVAILABLE`` (3): the coordinator is unreachable, unavailable (5xx/429) or answered
    garbage, even after retries; no number was taken for sure — retry later with the SAME
    reference (the coordinator hands back the same number if it did take one).
    ``REFUSED`` (4): the coordinator refused (401/403 token, 404 unknown id, 409 reference
    taken with another date, 422 invalid); retrying unchanged will not help.
    ``CONFIG`` (5): the agent's configuration is missing or invalid.
    ``JOURNAL`` (6): the local journal could not be opened or refused a change.
    ``WHMCS`` (7): ``poll`` could not read or write this installation's WHMCS (unreachable,
    credentials, API role, IP restriction); nothing more was numbered.
    ``INCOMPLETE`` (8): ``poll`` ran through, but some invoices are left unnumbered or
    unconfirmed; the messages name each one and why (the next run retries them).
    ``BUSY`` (9): another ``poll`` of this installation holds the lock; nothing was done.
    ``BACKWARDS`` (10): the coordinator answered a new number at or below one this
    installation had already received for another document (same sequence and period): its
    data may be lost or restored from an old backup. The number was not written anywhere;
    the message names both numbers. An admin must raise the sequence's ``next_number``.
    """

    OK = 0
    INTERNAL = 1
    USAGE = 2
    UNAVAILABLE = 3
    REFUSED = 4
    CONFIG = 5
    JOURNAL = 6
    WHMCS = 7
    INCOMPLETE = 8
    BUSY = 9
    BACKWARDS = 10


EXIT_CODE_HELP = {
    ExitCode.OK: "ok",
    ExitCode.INTERNAL: "internal error (a bug; see the traceback)",
    ExitCode.USAGE: "bad usage or input; nothing was sent",
    ExitCode.UNAVAILABLE: "coordinator unreachable/unavailable; retry later, same reference",
    ExitCode.REFUSED: "coordinator refused the request (token, scope, conflict, invalid)",
    ExitCode.CONFIG: "configuration missing or invalid",
    ExitCode.JOURNAL: "local journal unusable",
    ExitCode.WHMCS: "poll: WHMCS unreachable or refused the API call",
    ExitCode.INCOMPLETE: "poll: some invoices left unnumbered/unconfirmed (named on stderr)",
    ExitCode.BUSY: "poll: another poller of this installation is running",
    ExitCode.BACKWARDS: "the coordinator's number went backwards (lost or old data); "
    "nothing written",
}
"""One line per exit code, as printed in ``--help``."""

# Options mirroring the environment names (API.md, "Agent configuration").
_OPTIONS: dict[str, str] = {
    "url": "the coordinator's base URL",
    "token": "this system's agent token (prefer the environment or the config file: "
    "command lines are visible to other users)",
    "whmcs_url": "this installation's .../includes/api.php",
    "whmcs_identifier": "WHMCS API identifier",
    "whmcs_secret": "WHMCS API secret (prefer the environment or the config file)",
    "whmcs_access_key": "WHMCS API access key",
    "number_on": f"when documents get a number: {' | '.join(NUMBER_ON_CHOICES)} (default paid)",
    "journal": "path of the local journal (default under $XDG_STATE_HOME)",
    "ca_bundle": "CA bundle to verify the coordinator's certificate",
    "timeout": "seconds per attempt to connect and to read (default 10)",
}


def _epilog() -> str:
    codes = "\n".join(f"  {int(code)}  {text}" for code, text in EXIT_CODE_HELP.items())
    return (
        "configuration: options > environment (INVOICE_SYNC_AGENT_<NAME>) > config file "
        f"(--config or {CONFIG_ENV}; TOML, keys like the option names) > defaults\n\n"
        f"exit codes:\n{codes}"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def version() -> str:
    """Return the installed version of the agent (the ``invoice-sync`` distribution)."""
    from importlib import metadata

    try:
        return metadata.version("invoice-sync")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _add_common(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """Add the options every command takes, before or after the command's name.

    After the name they default to "not given" (``SUPPRESS``), so they override what was
    given before it only when given.
    """
    unset = argparse.SUPPRESS if after_command else None
    parser.add_argument(
        "--version", action="version", version=f"invoice-sync-agent {version()}",
        help="print the version and exit",
    )
    parser.add_argument("--config", metavar="FILE", default=unset,
                        help=f"TOML config file (env {CONFIG_ENV})")
    for name, text in _OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.upper(),
            default=unset,
            help=f"{text} (env {ENV_PREFIX}{name.upper()})",
        )
    parser.add_argument(
        "-v", "--verbose", action="count",
        dest="verbose_after" if after_command else "verbose",
        default=argparse.SUPPRESS if after_command else 0,
        help="log more (-vv: debug)",
    )


class _CommandParser(_Parser):
    """A sub-command's parser: also takes the common options after the command's name."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _add_common(self, after_command=True)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (exposed for tests and docs)."""
    parser = _Parser(
        prog="invoice-sync-agent",
        description="Take legal invoice numbers from the invoice-sync coordinator. Fails closed: "
        "no coordinator answer, no number. Options go before or after the command.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, after_command=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )

    nxt = commands.add_parser(
        "next",
        help="take the number for a document and print it",
        description="Take the number for one document (the same reference always gets the "
        "same number) and print the formatted number. With several --reference, take them "
        "all at once (all or none, same document kind and date) and print one per line.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nxt.add_argument("document", choices=DOCUMENTS)
    nxt.add_argument("--reference", required=True, action="append",
                     help="the document's id in this WHMCS (repeat for several, up to 1000)")
    nxt.add_argument("--date", help="the document date, YYYY-MM-DD (default: today)")
    nxt.add_argument("--json", action="store_true", help="print the allocation object")

    confirm = commands.add_parser("confirm", help="confirm a number is written into WHMCS")
    confirm.add_argument("id", help="the allocation id, e.g. invoice:2026:51")
    confirm.add_argument("--invoicenum", required=True, help="the number as written into WHMCS")
    confirm.add_argument("--json", action="store_true", help="print the allocation object")

    void = commands.add_parser("void", help="give a number up, with a reason")
    void.add_argument("id", help="the allocation id, e.g. invoice:2026:51")
    void.add_argument("--reason", required=True, help="why (kept in the ledger for audits)")
    void.add_argument("--json", action="store_true", help="print the allocation object")

    get = commands.add_parser("get", help="show one allocation")
    get.add_argument("id", help="the allocation id, e.g. invoice:2026:51")

    status = commands.add_parser(
        "status",
        help="check the coordinator: live, ready, token, clock skew",
        description="Exit 0 when all is well, 3 when the coordinator is down or not ready, "
        "4 when the token is refused.",
    )
    status.add_argument("--json", action="store_true", help="print the status object")

    serve = commands.add_parser(
        "serve",
        help="run the local sidecar for the WHMCS hook",
        description="Answer the WHMCS PHP hook on a loopback port or a unix socket, so PHP "
        "never holds the coordinator token.",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8765",
        help="HOST:PORT or unix:/path (default 127.0.0.1:8765)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback address and callers (the sidecar has no auth of its own)",
    )
    serve.add_argument("--no-journal", action="store_true", help="do not keep the local journal")

    poll = commands.add_parser(
        "poll",
        help="number every invoice of this WHMCS that needs a number and has none",
        description="Finish what the journal left pending, then give every invoice that "
        "needs a number (see number_on) the coordinator's number: write it with "
        "UpdateInvoice, read it back, confirm it. Exit 0 when all are done. Safe from cron: "
        "a lock next to the journal keeps two pollers of one installation apart.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    poll.add_argument("--loop", action="store_true", help="run again every --interval seconds "
                      "until SIGTERM/SIGINT (failures are reported and retried next round)")
    poll.add_argument("--interval", type=_positive_float, default=300.0,
                      help="seconds between runs with --loop (default 300)")
    poll.add_argument("--page-size", type=int, default=100,
                      help="invoices per GetInvoices page (default 100)")
    poll.add_argument("--json", action="store_true", help="print each run's report as JSON")
    poll.add_argument("--full", action="store_true", help="read every invoice of WHMCS, not only "
                      "what may have changed since the last run (the first run always does)")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose + getattr(args, "verbose_after", 0)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = Config.load(args.config, **{name: getattr(args, name) for name in _OPTIONS})
        return _COMMANDS[args.command](config, args)
    except ValueError as exc:
        return _fail(ExitCode.USAGE, str(exc))
    except ConfigError as exc:
        return _fail(ExitCode.CONFIG, f"configuration: {exc}")
    except CoordinatorRefused as exc:
        return _fail(ExitCode.REFUSED, f"coordinator refused: {exc.message}", exc.errors)
    except CoordinatorError as exc:
        return _fail(ExitCode.UNAVAILABLE, f"coordinator: {exc.message}")
    except NumberWentBackwards as exc:
        return _fail(ExitCode.BACKWARDS, exc.message)
    except JournalError as exc:
        return _fail(ExitCode.JOURNAL, f"journal: {exc}")


def _fail(code: ExitCode, message: str, errors: dict[str, Any] | None = None) -> int:
    print(f"invoice-sync-agent: {message}", file=sys.stderr)
    if errors:
        print(json.dumps(errors, indent=2, sort_keys=True), file=sys.stderr)
    return int(code)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _next(config: Config, args: argparse.Namespace) -> int:
    date = check_date(args.date) if args.date else None
    journal = None
    if config.journal.exists():
        # This installation's journal (sidecar, poller) knows the numbers it received: a new
        # one at or below them is refused before anybody prints it.
        from agent._journal import Journal

        journal = Journal(config.journal)
    try:
        before = journal.mark() if journal is not None else None
        with Client(config) as client:
            if len(args.reference) == 1:
                taken = [client.allocate(args.document, args.reference[0], date)]
            else:
                taken = client.allocate_batch(
                    [(args.document, reference, date) for reference in args.reference])
        if journal is not None and before is not None:
            for allocation in taken:
                journal.receive(allocation, before=before)
    finally:
        if journal is not None:
            journal.close()
    if args.json:
        _print_json(taken[0].to_json() if len(taken) == 1 else [a.to_json() for a in taken])
    else:
        for allocation in taken:
            print(allocation.formatted)
    return ExitCode.OK


def _confirm(config: Config, args: argparse.Namespace) -> int:
    with Client(config) as client:
        allocation = client.confirm(args.id, args.invoicenum)
    _print_json(allocation.to_json()) if args.json else print(allocation.status)
    return ExitCode.OK


def _void(config: Config, args: argparse.Namespace) -> int:
    with Client(config) as client:
        allocation = client.void(args.id, args.reason)
    _print_json(allocation.to_json()) if args.json else print(allocation.status)
    return ExitCode.OK


def _get(config: Config, args: argparse.Namespace) -> int:
    with Client(config) as client:
        _print_json(client.get(args.id).to_json())
    return ExitCode.OK


def _status(config: Config, args: argparse.Namespace) -> int:
    with Client(config) as client:
        status = client.status()
    if args.json:
        _print_json(status.to_json())
    else:
        skew = (
            "unknown" if status.clock_skew is None else f"{status.clock_skew.total_seconds():+.0f}s"
        )
        print(f"coordinator  {status.url}")
        print(f"live         {'yes' if status.live else 'NO'}")
        print(f"ready        {'yes' if status.ready else 'NO'}")
        token = {True: "accepted", False: "REFUSED", None: "unknown"}[status.token_valid]
        print(f"token        {token}")
        if status.system:
            print(f"system       {status.system}")
        print(f"clock skew   {skew}")
        for problem in status.problems:
            print(f"problem: {problem}", file=sys.stderr)
    if status.token_valid is False:
        return ExitCode.REFUSED
    if not (status.live and status.ready):
        return ExitCode.UNAVAILABLE
    return ExitCode.OK


def _serve(config: Config, args: argparse.Namespace) -> int:
    # Imported here: the other commands should not pay for http.server and sqlite3.
    from agent._journal import Journal
    from agent._sidecar import Sidecar, make_server

    config.require("url", "token")
    journal = None if args.no_journal else Journal(config.journal)
    sidecar = Sidecar(lambda: Client(config), journal=journal)
    try:
        server = make_server(args.listen, sidecar, allow_remote=args.allow_remote)
    except BaseException:
        if journal is not None:
            journal.close()
        raise

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(ExitCode.OK)

    signal.signal(signal.SIGTERM, stop)
    # Printed (not logged) so supervisors and tests see it at any verbosity; with port 0
    # it names the port the system picked.
    where = (
        args.listen
        if args.listen.startswith("unix:")
        else "{}:{}".format(*server.server_address[:2])
    )
    print(
        f"invoice-sync-agent: sidecar listening on {where} for {config.url}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        if journal is not None:
            journal.close()
    return ExitCode.OK


def _poll(config: Config, args: argparse.Namespace) -> int:
    # Imported here, like serve: next/confirm/void should not pay for sqlite3 and the poller.
    import threading

    config.require("url", "token", "whmcs_url", "whmcs_identifier", "whmcs_secret")
    if args.page_size < 1:
        raise ValueError("--page-size must be >= 1")
    stop = threading.Event()
    if args.loop:

        def on_signal(signum: int, frame: Any) -> None:
            log.warning("signal %d: stopping after the current invoice", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    while True:
        try:
            code = _poll_once(config, args, stop)
        except JournalError as exc:
            if not args.loop:
                raise
            code = _fail(ExitCode.JOURNAL, f"journal: {exc}")
        if not args.loop:
            return code
        if stop.wait(args.interval):
            return ExitCode.OK


def _poll_once(config: Config, args: argparse.Namespace, stop: Any) -> int:
    from agent._exceptions import PollerBusy
    from agent._journal import Journal
    from agent._poller import Poller, poll_lock
    from agent.whmcs import WhmcsClient

    try:
        with (
            poll_lock(config.journal),
            Journal(config.journal) as journal,
            Client(config) as client,
            WhmcsClient(
                config.whmcs_url or "",
                config.whmcs_identifier or "",
                config.whmcs_secret or "",
                config.whmcs_access_key,
            ) as whmcs,
        ):
            poller = Poller(client, whmcs, journal, number_on=config.number_on,
                            page_size=args.page_size, should_stop=stop.is_set)
            report = poller.run(full=args.full)
    except PollerBusy as exc:
        return _fail(ExitCode.BUSY, str(exc))
    return _print_report(report, args.json)


_ABORT_CODES = {"coordinator": ExitCode.UNAVAILABLE, "refused": ExitCode.REFUSED,
                "whmcs": ExitCode.WHMCS, "backwards": ExitCode.BACKWARDS}


def _print_report(report: Any, as_json: bool) -> int:
    failed = report.of("failed")
    if as_json:
        _print_json({
            "seen": report.seen,
            "full": report.full,
            "whmcs_calls": report.whmcs_calls,
            "allocations": report.allocations,
            "outcomes": [vars(o) for o in report.outcomes],
            "aborted": None if report.aborted is None else vars(report.aborted),
            "ok": report.ok,
        })
    else:
        for o in report.outcomes:
            if o.action == "failed":
                continue
            what = "credit note" if o.document == "credit_note" else "invoice"
            tail = f"  ({o.message})" if o.message else ""
            print(f"{o.action:<10} {what} {o.reference:<8} {o.formatted}{tail}")
        print(
            f"poll: {len(report.of('numbered'))} numbered, {len(report.of('confirmed'))} "
            f"confirmed, {len(report.of('voided'))} voided, {len(failed)} failed; "
            f"{report.seen} invoice(s) read from WHMCS"
        )
    for o in failed:
        print(f"invoice-sync-agent: invoice {o.reference}: not done ({o.kind}): {o.message}",
              file=sys.stderr)
    if report.aborted is not None:
        where = "" if report.aborted.reference == "-" else f" at invoice {report.aborted.reference}"
        print(f"invoice-sync-agent: poll stopped{where}, no number taken or written after "
              f"this: {report.aborted.message}", file=sys.stderr)
        return int(_ABORT_CODES.get(report.aborted.kind or "", ExitCode.INTERNAL))
    return int(ExitCode.INCOMPLETE if failed else ExitCode.OK)


_COMMANDS = {
    "next": _next,
    "confirm": _confirm,
    "void": _void,
    "get": _get,
    "status": _status,
    "serve": _serve,
    "poll": _poll,
}
