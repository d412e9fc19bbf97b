"""Recorded media: the files a recorded result points at are stored next to the fixture file and
served by the mock on replay, with the upstream gone."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from fake_fal_upstream import FakeFal
from httpclient import http
from inner_runs import QUIET

from pytest_falmock import FalMock, FixtureFileError
from pytest_falmock._media import png, video_sample

KEY = "fk-media-0123456789:media-secret-abcdefgh"
PNG = png(8, 8, (200, 10, 10))
MP4 = video_sample()
Make = Callable[..., FalMock]


@pytest.fixture
def make(make: Make) -> Make:
    """conftest's recording mock with this module's key: ``make(mode="new", media_max=...)``."""
    return functools.partial(make, key=KEY)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(mock: FalMock) -> Any:
    envelope = http("POST", f"{mock.url}/queue/fake/media", {"prompt": "p"}).json
    return http("GET", envelope["response_url"]).json


def media_files(target: Path) -> list[str]:
    folder = target.parent / "fal.media"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_media_urls_are_downloaded_next_to_the_fixture_and_served_by_the_mock(
    make: Make, fake: FakeFal, target: Path
) -> None:
    fake.media = {"cat.png": (PNG, "image/png"), "clip.mp4": (MP4, "video/mp4")}
    mock = make()

    result = record(mock)

    cat, clip = (f"{fake.url}/media/{name}" for name in ("cat.png", "clip.mp4"))
    document = json.loads(target.read_text())
    (entry,) = document["fixtures"]
    assert entry["response"]["json"]["images"][0]["url"] == cat  # the file keeps what fal answered
    assert entry["media"] == {
        cat: {"file": f"fal.media/{sha(PNG)}.png", "content_type": "image/png"},
        clip: {"file": f"fal.media/{sha(MP4)}.mp4", "content_type": "video/mp4"},
    }
    assert str(target.parent) not in target.read_text()  # no absolute path
    assert media_files(target) == sorted([f"{sha(PNG)}.png", f"{sha(MP4)}.mp4"])
    assert (target.parent / "fal.media" / f"{sha(PNG)}.png").read_bytes() == PNG
    downloads = [r for r in fake.requests if r.path.startswith("/media/")]
    assert sorted(r.path for r in downloads) == ["/media/cat.png", "/media/clip.mp4"]  # once each
    assert all("Authorization" not in r.headers for r in downloads)  # the key never goes along

    served = [image["url"] for image in result["images"]]
    assert all(url.startswith(mock.url + "/files/") for url in served)
    assert result["again"] == served[0]  # every occurrence of a recorded URL is rewritten
    assert [http("GET", url).body for url in served] == [PNG, MP4]
    assert http("GET", served[1]).headers["Content-Type"] == "video/mp4"
    assert mock.take_warnings() == []


def test_replay_serves_the_recorded_bytes_with_the_upstream_gone(
    make: Make, fake: FakeFal, target: Path
) -> None:
    fake.media = {"cat.png": (PNG, "image/png")}
    record(make())
    fake.stop()
    try:
        with FalMock() as replay:
            replay.load_fixtures(target)
            result = http("POST", f"{replay.url}/run/fake/media", {"prompt": "p"}).json
            (image,) = result["images"]
            assert image["url"].startswith(replay.url + "/files/")
            served = http("GET", image["url"])
            assert (served.status, served.body, served.headers["Content-Type"]) == (200, PNG, "image/png")
            assert [(f.source, f.content_type, f.data) for f in replay.files] == [
                ("recorded", "image/png", PNG)
            ]
            replay.reset()
            assert http("GET", image["url"]).body == PNG  # recorded media live for the session
            replay.clear_session_stubs()
            assert (replay.files, http("GET", image["url"]).status) == ([], 404)
    finally:
        fake.start()


def test_media_that_cannot_be_downloaded_keep_their_url_with_a_warning(
    make: Make, fake: FakeFal, target: Path
) -> None:
    fake.media = {"big.png": (PNG, "image/png"), "small.txt": (b"ok", "text/plain")}
    fake.redirects = {"moved.png": "https://elsewhere.example/x.png"}
    mock = make(media_max=len(PNG) - 1)

    result = record(mock)

    urls = [image["url"] for image in result["images"]]
    assert urls[0] == f"{fake.url}/media/big.png"
    assert urls[1].startswith(mock.url + "/files/")
    assert urls[2] == f"{fake.url}/media/moved.png"
    (entry,) = json.loads(target.read_text())["fixtures"]
    assert list(entry["media"]) == [f"{fake.url}/media/small.txt"]
    warnings = mock.take_warnings()
    assert warnings == [
        f"fal_mock recorded {fake.url}/media/big.png as a URL, not its bytes: it is {len(PNG):,} bytes, "
        f"over the {len(PNG) - 1:,}-byte cap (raise it with --fal-record-media-max, or --record-media-max "
        "for fal-mock)",
        f"fal_mock recorded {fake.url}/media/moved.png as a URL, not its bytes: it answered HTTP 302 to "
        "https://elsewhere.example/x.png (redirects are not followed)",
    ]
    assert mock.take_warnings() == []
    assert not [p for p in (target.parent / "fal.media").iterdir() if p.name.startswith(".")]


def test_rerecording_replaces_changed_media_and_leaves_no_orphans(
    make: Make, fake: FakeFal, target: Path
) -> None:
    fake.media = {"cat.png": (PNG, "image/png"), "clip.mp4": (MP4, "video/mp4")}
    record(make())
    assert media_files(target) == sorted([f"{sha(PNG)}.png", f"{sha(MP4)}.mp4"])
    new_png = png(8, 8, (0, 0, 255))
    fake.media = {"cat.png": (new_png, "image/png")}

    result = record(make("all"))

    assert media_files(target) == [f"{sha(new_png)}.png"]
    assert http("GET", result["images"][0]["url"]).body == new_png
    fake.media = {}
    record(make("all"))
    assert not (target.parent / "fal.media").exists()


def test_media_max_zero_records_every_url_as_it_is(make: Make, fake: FakeFal, target: Path) -> None:
    fake.media = {"cat.png": (PNG, "image/png")}
    mock = make(media_max=0)

    result = record(mock)

    assert result["images"][0]["url"] == f"{fake.url}/media/cat.png"
    assert "media" not in json.loads(target.read_text())["fixtures"][0]
    assert mock.take_warnings() == []
    assert not [r for r in fake.requests if r.path.startswith("/media/")]


def test_only_fal_media_hosts_and_the_upstream_origin_are_media() -> None:
    from pytest_falmock._record_media import MediaRecorder

    recorder = MediaRecorder(Path("fal.json"), "http://127.0.0.1:9000", 1, 1.0)
    assert recorder.is_media("https://v3.fal.media/files/x.png")
    assert recorder.is_media("https://fal.media/files/x.png")
    assert recorder.is_media("http://127.0.0.1:9000/media/x.png")
    assert not recorder.is_media("http://v3.fal.media/files/x.png")  # fal serves media over https
    assert not recorder.is_media("https://evilfal.media/x.png")
    assert not recorder.is_media("http://127.0.0.1:9001/media/x.png")
    assert not recorder.is_media("https://example.com/x.png")
    assert not recorder.is_media("a prompt about https://v3.fal.media")
    assert not MediaRecorder(Path("fal.json"), None, 1, 1.0).is_media("http://127.0.0.1:9000/x.png")


# -- the fixture-file format ------------------------------------------------------------------------
def entry_with(media: Any) -> dict[str, Any]:
    return {
        "fixtures": [
            {
                "match": {"model": "fal-ai/flux/dev"},
                "response": {"json": {"images": [{"url": "https://v3.fal.media/files/cat.png"}]}},
                "media": media,
            }
        ]
    }


def test_a_hand_written_entry_can_serve_a_local_sample(tmp_path: Path) -> None:
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "cat.png").write_bytes(PNG)
    path = tmp_path / "fal.json"
    media = {"https://v3.fal.media/files/cat.png": {"file": "samples/cat.png", "content_type": "image/png"}}
    path.write_text(json.dumps(entry_with(media)))
    with FalMock() as mock:
        mock.load_fixtures(path)
        url = http("POST", f"{mock.url}/run/fal-ai/flux/dev", {}).json["images"][0]["url"]
        assert url.startswith(mock.url + "/files/")
        assert url.endswith("/cat.png")
        assert http("GET", url).body == PNG


@pytest.mark.parametrize(
    ("media", "message"),
    [
        (
            {"u": {"file": "missing.png", "content_type": "image/png"}},
            "missing.png is missing next to the fixture file",
        ),
        ({"u": {"file": "/etc/passwd", "content_type": "text/plain"}}, "expected a relative path inside"),
        ({"u": {"file": "../x.png", "content_type": "image/png"}}, "expected a relative path inside"),
        ({"u": {"file": "x.png"}}, "expected a media type such as 'image/png'"),
        ({"u": {"file": "x.png", "content_type": "image/png", "size": 3}}, "unknown key 'size'"),
        (["u"], "expected an object of URL -> {file, content_type}"),
    ],
)
def test_bad_media_entries_name_the_file_and_the_entry(tmp_path: Path, media: Any, message: str) -> None:
    path = tmp_path / "fal.json"
    path.write_text(json.dumps(entry_with(media)))
    with pytest.raises(FixtureFileError, match=r"fixtures\[0\]\.media") as info:
        FalMock().load_fixtures(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_media_need_a_file_on_disk(call: Callable[..., Any]) -> None:
    with FalMock() as mock:
        answer = call("POST", mock.base_url + "/__falmock/fixtures", entry_with({}))
        assert answer.status == 400
        assert "media files need a fixture file on disk" in answer.json["detail"]


# -- through the plugin --------------------------------------------------------------------------------
APP = """
import hashlib, os
import fal_client, httpx

def test_downloads_its_result(fal_mock):
    image = fal_client.subscribe("fake/media", arguments={"prompt": "p"})["images"][0]
    data = httpx.get(image["url"]).content
    with open(os.path.join(os.environ["OUT_DIR"], "sha.txt"), "a") as out:
        out.write(hashlib.sha256(data).hexdigest() + " " + image["url"].split("/fal/")[0] + "\\n")
"""


def test_record_then_replay_downloads_with_the_upstream_stopped(
    pytester: pytest.Pytester, fake: FakeFal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("OUT_DIR", str(pytester.path))
    fake.media = {"cat.png": (PNG, "image/png")}
    pytester.makepyfile(test_app=APP)
    upstream = f"--fal-upstream={fake.url}"
    pytester.runpytest_subprocess(
        *QUIET, "--fal-record", upstream, "--fal-fixtures=fal.json"
    ).assert_outcomes(passed=1)
    fake.stop()
    try:
        replayed = pytester.runpytest_subprocess(*QUIET, "--fal-fixtures=fal.json", "-W", "error")
    finally:
        fake.start()

    replayed.assert_outcomes(passed=1)
    lines = (pytester.path / "sha.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [sha(PNG), sha(PNG)]
    assert all(line.split()[1].startswith("http://127.0.0.1:") for line in lines)
    assert (pytester.path / "fal.media" / f"{sha(PNG)}.png").read_bytes() == PNG


def test_a_media_url_kept_while_recording_is_a_warning_in_the_test(
    pytester: pytest.Pytester, fake: FakeFal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("OUT_DIR", str(pytester.path))
    fake.media = {"cat.png": (PNG, "image/png")}
    pytester.makepyfile(
        test_app="""
import fal_client

def test_records(fal_mock):
    fal_client.subscribe("fake/media", arguments={"prompt": "p"})
"""
    )
    result = pytester.runpytest_subprocess(
        *QUIET,
        "--fal-record",
        f"--fal-upstream={fake.url}",
        "--fal-fixtures=fal.json",
        "--fal-record-media-max=10",
    )
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*FalMockWarning: fal_mock recorded http://127.0.0.1:*/media/cat.png as a URL*"]
    )
    bad = pytester.runpytest(*QUIET, "--fal-record-media-max=lots")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--fal-record-media-max: expected a size in bytes such as 52428800, 50MiB*"])
