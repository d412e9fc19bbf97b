"""``fal-mock``: the same mock as a plain server, for frontends, Node apps and docker-compose.

    fal-mock --fixtures fal.json [--host 127.0.0.1] [--port 4005] [--allow-host NAME]
             [--polls-before-in-progress A] [--polls-before-completed C]
             [--record-mode MODE --upstream URL [--record-media-max SIZE]]
             [--allow-remote-webhooks] [--quiet] [--real-time]

Prints the proxy URL (``http://127.0.0.1:4005/fal``) on stdout once it serves, one line per
request on stderr (unless ``--quiet``), and exits 0 on SIGINT or SIGTERM. Drive it over HTTP
with the control API under ``/__falmock/``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType
from typing import Optional, Sequence

from . import __version__
from ._diagnostics import RequestLog
from ._errors import FalMockUsageError, FalMockWarning
from ._fixture_files import FixtureFileError, load_path
from ._mock import FalMock
from ._record import recorder_for
from ._secrets import Credentials
from ._settings import RECORD_MODES, Settings, allowed_hosts, parse_size, queue_config, record_settings
from ._stubs import printable
from ._urls import control_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4005


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fal-mock",
        description="Serve a local, deterministic stand-in for the fal.ai API "
        "(control API under /__falmock/: health, fixtures, reset, requests, unmatched, advance).",
    )
    parser.add_argument(
        "--fixtures",
        action="append",
        default=[],
        metavar="PATH",
        help="JSON fixture file or directory of *.json (repeatable); when recording, the last "
        "one is the file recordings are written to (created if missing).",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to bind (default {DEFAULT_HOST}); any other than a loopback address makes "
        "the mock reachable from other machines (a warning says so)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header names NAME (repeatable), e.g. the service name "
        "other containers use; loopback names and the --host address are always answered",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to bind, 0 for any free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--polls-before-in-progress",
        type=int,
        metavar="A",
        help="status polls a queue job stays IN_QUEUE (same rules as @pytest.mark.fal_queue)",
    )
    parser.add_argument(
        "--polls-before-completed", type=int, metavar="C", help="status polls before a queue job is COMPLETED"
    )
    parser.add_argument(
        "--record-mode",
        choices=RECORD_MODES,
        default="none",
        help="none (default): never touch the network; new: forward unmatched requests upstream and "
        "record them; once: record only if the fixture file did not exist at start; all: forward "
        "everything, replacing recorded entries",
    )
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help="record against URL instead of the real fal hosts (requests carry x-fal-target-host)",
    )
    parser.add_argument(
        "--record-media-max",
        metavar="SIZE",
        default="50MiB",
        help="while recording, download media files up to SIZE (bytes, or e.g. 200MiB; 0: none) next "
        "to the fixture file so replays serve them offline; larger ones keep their URL (default 50MiB)",
    )
    parser.add_argument(
        "--allow-remote-webhooks",
        action="store_true",
        help="deliver fal_webhook callbacks to non-loopback URLs too",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="do not log each request on stderr (method, path, status, route, model; why nothing matched)",
    )
    parser.add_argument(
        "--real-time",
        action="store_true",
        help="make a run's or stream's latency= wait on the wall clock (by default it moves the "
        "mock's clock instead; POST /__falmock/advance moves it too)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    polls = {
        name: value
        for name, value in (
            ("polls_before_in_progress", args.polls_before_in_progress),
            ("polls_before_completed", args.polls_before_completed),
        )
        if value is not None
    }
    try:
        queue = queue_config("fal-mock", **polls)
        record = record_settings(
            args.record_mode,
            [Path(p) for p in args.fixtures],
            args.upstream,
            where="fal-mock",
            fixtures_option="--fixtures",
            credentials=Credentials.from_env(),
            media_max=parse_size(args.record_media_max, "fal-mock: --record-media-max"),
        )
    except FalMockUsageError as exc:
        parser.error(str(exc).replace("fal-mock: ", "", 1))
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    if not args.host.strip():
        parser.error("--host must name an interface, e.g. 127.0.0.1 (an empty host would bind every one)")
    try:
        hosts = allowed_hosts(args.allow_host, "--allow-host")
    except ValueError as exc:
        parser.error(str(exc))
    return Settings(
        queue=queue,
        allow_remote_webhooks=args.allow_remote_webhooks,
        record=record,
        virtual_time=not args.real_time,
        allow_hosts=hosts,
    )


def _print_warnings(mock: FalMock) -> None:
    for note in mock.take_warnings():
        print(f"fal-mock: warning: {printable(note)}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    record = settings.record
    recorder = recorder_for(record)
    mock = FalMock(args.host, args.port, settings=settings, upstream=recorder)
    if not args.quiet:
        mock.add_request_listener(RequestLog(sys.stderr, Credentials.from_env().secrets))
    try:
        for path in args.fixtures:
            if record.recording and Path(path) == record.target and not Path(path).exists():
                continue  # created on first recording
            mock.add_session_stubs(load_path(Path(path)))
    except FixtureFileError as exc:
        parser.exit(2, f"fal-mock: error: {exc}\n")

    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FalMockWarning)
            mock.start()
    except (OSError, SystemExit) as exc:
        parser.exit(1, f"fal-mock: error: cannot serve on {args.host}:{args.port}: {exc}\n")
    print(mock.url, flush=True)
    for warning in caught:
        if issubclass(warning.category, FalMockWarning):
            print(f"fal-mock: warning: {warning.message}", file=sys.stderr, flush=True)
    if recorder is not None:
        where = args.upstream or "https://<fal host>"
        print(
            f"fal-mock: recording ({record.mode}) to {record.target} via {where}", file=sys.stderr, flush=True
        )
    elif record.recording:
        print(
            f"fal-mock: {record.target} existed: record mode once does not record",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"fal-mock: control API at {control_url(mock.base_url, '')}; stop with Ctrl+C",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            _print_warnings(mock)
    finally:
        mock.stop()
        _print_warnings(mock)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
