"""One immutable settings value: session defaults, per-test overrides, and their validation.

Every public way to set something (``@pytest.mark.fal_mock``, ``@pytest.mark.fal_queue``,
``fal_mock.queue()``, ``FalMock(...)``, the ini file and command line, ``fal-mock``) ends up
in a :class:`Settings`, validated here, so a typo gets the same message everywhere.
:class:`~pytest_falmock.FalMock` owns the value: its session defaults, and the per-test
overrides that :meth:`~pytest_falmock.FalMock.reset` drops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ._errors import FalMockUsageError
from ._http_limits import ConnectionLimits
from ._jobs import QueueConfig
from ._net import host_name
from ._secrets import Credentials

DEFAULT_MAX_JOBS = 50_000
DEFAULT_MAX_BODY = 128 * 1024 * 1024
#: Connection bounds (see ``docs/wire.md``, "Limits"): generous for tests, finite for abuse.
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 120.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 512
#: Unmatched requests kept for the teardown report (later ones are counted, not kept).
DEFAULT_MAX_UNMATCHED = 1_000
#: Bytes of each request's raw body the journal keeps (``FalRequest.body``; ``input`` stays whole).
DEFAULT_JOURNAL_BODY = 64 * 1024
#: Bytes the journal (and, apart, the unmatched list) holds in all: each record's head, raw body
#: prefix and an estimate of its decoded input (the oldest records go first beyond it).
DEFAULT_MAX_JOURNAL_BYTES = 256 * 1024 * 1024
#: Largest input the mock decodes: a JSON request body, a WebSocket message (413 / close 1009
#: beyond). Decoding JSON or msgpack can take 10-70 times the bytes in memory.
DEFAULT_MAX_INPUT = 16 * 1024 * 1024
#: Per-test files: uploads, multipart uploads and their parts under way, added and generated
#: files (507 beyond). Generous: a 300 MiB multipart upload is 31 parts and 300 MiB.
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024

RECORD_MODES = ("none", "once", "new", "all")
#: Seconds one upstream HTTP request may take while recording, in all (connect to last byte).
RECORD_REQUEST_TIMEOUT = 30.0
#: Seconds a whole recorded queue walk (submit, polls, result) may take.
RECORD_WALK_TIMEOUT = 15 * 60.0
#: Largest media file a recording downloads (``--fal-record-media-max``).
RECORD_MEDIA_MAX = 50 * 1024 * 1024
_SIZE_UNITS = {"": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}
_SIZE_UNITS.update({"g": 1024**3, "gb": 1024**3, "gib": 1024**3})

QUEUE_KEYWORDS = ("polls", "polls_before_in_progress", "polls_before_completed")
#: The keywords of ``@pytest.mark.fal_mock``: the per-test switches of :class:`Settings`.
MARKER_KEYWORDS = ("allow_unmatched", "patch_client", "allow_remote_webhooks", "virtual_time")


@dataclass(frozen=True)
class RecordSettings:
    """How (and whether) a mock records. ``active`` is False for ``none`` and for ``once`` when
    the target file already existed at session start."""

    mode: str = "none"
    target: Optional[Path] = None
    upstream: Optional[str] = None
    credentials: Credentials = field(default_factory=Credentials)
    target_existed: bool = False
    request_timeout: float = RECORD_REQUEST_TIMEOUT  # per upstream request, in all
    max_answer: int = DEFAULT_MAX_BODY  # the largest upstream answer body recorded (502 beyond)
    walk_timeout: float = RECORD_WALK_TIMEOUT
    #: Media files up to this size are downloaded next to the fixture file (0: none are).
    media_max: int = RECORD_MEDIA_MAX

    @property
    def recording(self) -> bool:
        """A record mode other than ``none`` was asked for."""
        return self.mode != "none"

    @property
    def active(self) -> bool:
        return self.recording and not (self.mode == "once" and self.target_existed)


@dataclass(frozen=True)
class Settings:
    """Everything that tunes a mock. Per test, only :data:`PER_TEST` fields may change."""

    #: Polling realism for queue jobs (``@pytest.mark.fal_queue``).
    queue: QueueConfig = field(default_factory=QueueConfig)
    #: Do not fail the test for requests that matched nothing.
    allow_unmatched: bool = False
    #: Point ``fal_client`` at the mock for the test.
    patch_client: bool = True
    #: Deliver webhooks to non-loopback URLs too.
    allow_remote_webhooks: bool = False
    #: The patched clients' waits and run/stream latency advance the mock's clock instead of
    #: waiting (``_clients/_virtual_time.py``); False waits on the wall clock.
    virtual_time: bool = True
    #: The ``on_*`` helpers may register per-test stubs now. The plugin's session mock is
    #: created with False and every ``fal_mock`` test switches it on, so a stub registered
    #: outside a test fails at once instead of vanishing at the next reset.
    test_stubs: bool = True
    #: Record & replay.
    record: RecordSettings = field(default_factory=RecordSettings)
    #: Most queue jobs kept (the oldest finished are evicted first).
    max_jobs: int = DEFAULT_MAX_JOBS
    #: Largest request body accepted (413 beyond).
    max_body: int = DEFAULT_MAX_BODY
    #: Host names (besides loopback ones and the bound host) requests may name in ``Host``.
    allow_hosts: Tuple[str, ...] = ()
    #: Seconds a request head may take from its first byte (408 after).
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: Seconds a request body may take, and each write of an answer (408 / closed after).
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    #: Seconds an idle keep-alive connection stays open.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Connections served at once (503 beyond).
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Unmatched requests kept for the teardown report.
    max_unmatched: int = DEFAULT_MAX_UNMATCHED
    #: Bytes of each raw request body kept in the journal.
    journal_body: int = DEFAULT_JOURNAL_BODY
    #: Bytes the journal keeps in all (heads, body prefixes, decoded inputs); the unmatched
    #: list has the same budget of its own.
    max_journal_bytes: int = DEFAULT_MAX_JOURNAL_BYTES
    #: Largest JSON request body decoded as an input, and largest WebSocket message.
    max_input: int = DEFAULT_MAX_INPUT
    #: Files a test may make the mock hold (uploads, parts under way, added, generated).
    max_files: int = DEFAULT_MAX_FILES
    #: Bytes those files may take in all.
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    def __post_init__(self) -> None:
        names = ("max_jobs", "max_body", "max_connections", "max_unmatched", "max_journal_bytes")
        for name in (*names, "max_input", "max_files", "max_file_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        value = self.journal_body
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"journal_body must be a non-negative integer, got {value!r}")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        object.__setattr__(self, "allow_hosts", allowed_hosts(self.allow_hosts, "allow_hosts"))

    @property
    def connection_limits(self) -> ConnectionLimits:
        """The bounds the HTTP server keeps on connections (:mod:`._http_limits`)."""
        return ConnectionLimits(
            self.header_timeout, self.body_timeout, self.idle_timeout, self.max_connections
        )

    def override(self, **changes: Any) -> Settings:
        """A copy with per-test ``changes`` (already validated) applied.

        Every ``fal_mock`` test makes one: the session fields were validated when this value
        was made, so they are copied as they are rather than checked again.
        """
        fixed = sorted(set(changes) - set(PER_TEST))
        if fixed:
            raise FalMockUsageError(f"{fixed[0]} is a session setting; it cannot change per test")
        copy = object.__new__(Settings)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


#: The fields a test may override (markers, ``fal_mock.queue()``, the fixture).
PER_TEST = ("queue", "test_stubs", *MARKER_KEYWORDS)


def _keywords_only(
    where: str, args: tuple[Any, ...], allowed: Sequence[str], kwargs: Mapping[str, Any]
) -> None:
    if args:
        raise FalMockUsageError(
            f"{where}: takes keyword arguments only ({', '.join(allowed)}), got positional {args!r}"
        )
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise FalMockUsageError(
            f"{where}: unknown keyword {unknown[0]!r} (expected one of: {', '.join(allowed)})"
        )


def _count(where: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FalMockUsageError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise FalMockUsageError(f"{where}: {name} must be a non-negative integer, got {value}")
    return value


def queue_config(where: str, args: tuple[Any, ...] = (), **kwargs: Any) -> QueueConfig:
    """Resolve ``polls`` / ``polls_before_in_progress`` / ``polls_before_completed``.

    ``where`` names the caller in error messages (e.g. ``"@pytest.mark.fal_queue"``).
    """
    _keywords_only(where, args, QUEUE_KEYWORDS, kwargs)
    polls = kwargs.get("polls")
    first = kwargs.get("polls_before_in_progress")
    done = kwargs.get("polls_before_completed")
    if polls is not None and (first is not None or done is not None):
        both = "polls_before_in_progress" if first is not None else "polls_before_completed"
        raise FalMockUsageError(
            f"{where}: polls cannot be combined with {both}; give either polls=N or the two thresholds"
        )
    if polls is not None:
        n = _count(where, "polls", polls)
        if n == 0:
            return QueueConfig(0, 0)
        if n == 1:
            return QueueConfig(0, 1)
        return QueueConfig(1, n)
    if first is None and done is None:
        return QueueConfig(0, 0)
    if done is None:
        a = _count(where, "polls_before_in_progress", first)
        return QueueConfig(a, a + 1)
    c = _count(where, "polls_before_completed", done)
    if first is None:
        return QueueConfig(0, max(c, 1))
    a = _count(where, "polls_before_in_progress", first)
    return QueueConfig(a, max(c, a + 1))


def marker_overrides(where: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The validated keywords of ``@pytest.mark.fal_mock`` (each a :class:`Settings` field)."""
    _keywords_only(where, args, MARKER_KEYWORDS, kwargs)
    for name, value in kwargs.items():
        if not isinstance(value, bool):
            raise FalMockUsageError(f"{where}: {name} must be True or False, got {value!r}")
    return dict(kwargs)


def allowed_hosts(names: Iterable[str], where: str) -> tuple[str, ...]:
    """Validate ``--allow-host`` names: host names or IP addresses, no port, no scheme."""
    if isinstance(names, str):
        raise ValueError(f"{where}: expected a list of host names, got the string {names!r}")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{where}: expected host names, got {name!r}")
        host = host_name(name)
        if host is None:
            raise ValueError(
                f"{where}: {name!r} is not a host name; give a bare name or address such as "
                "falmock, mock.internal or 10.0.0.5 (no scheme, port or path)"
            )
        if host not in out:
            out.append(host)
    return tuple(out)


def check_upstream(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise FalMockUsageError(
            f"{where}: expected an http(s) base URL such as http://127.0.0.1:8000, got {url!r}"
        )
    return url.rstrip("/")


def parse_size(text: str, where: str) -> int:
    """``"50MiB"``, ``"200M"``, ``"1048576"`` -> bytes (units are powers of 1024)."""
    cleaned = str(text).strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgib")
    unit = _SIZE_UNITS.get(cleaned[len(number) :])
    if not number.isdigit() or not number.isascii() or unit is None:
        raise FalMockUsageError(
            f"{where}: expected a size in bytes such as 52428800, 50MiB or 200M, got {text!r}"
        )
    return int(number) * unit


def record_settings(
    mode: str,
    targets: Sequence[Path],
    upstream: Optional[str],
    *,
    where: str,
    fixtures_option: str,
    credentials: Optional[Credentials] = None,
    target_existed: Optional[bool] = None,
    media_max: int = RECORD_MEDIA_MAX,
) -> RecordSettings:
    """Validate the record options; the target is the last fixture path given."""
    if mode not in RECORD_MODES:
        raise FalMockUsageError(
            f"{where}: record mode must be one of {', '.join(RECORD_MODES)}, got {mode!r}"
        )
    url = check_upstream(upstream, where) if upstream else None
    if mode == "none":
        return RecordSettings("none", upstream=url)
    if not targets:
        raise FalMockUsageError(
            f"{where}: record mode {mode!r} needs {fixtures_option} PATH, the JSON fixture file "
            "recordings are written to (created if missing)"
        )
    target = targets[-1]
    if target.is_dir():
        raise FalMockUsageError(
            f"{where}: the record target {target} is a directory; name a JSON file "
            f"(e.g. {fixtures_option} {target / 'recorded.json'})"
        )
    return RecordSettings(
        mode,
        target,
        url,
        credentials if credentials is not None else Credentials.from_env(),
        target.exists() if target_existed is None else target_existed,
        media_max=media_max,
    )
