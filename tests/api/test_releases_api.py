"""`POST /v1/deploy` and `GET /v1/releases`: publishing from CI, with the files in the
body, all or nothing, and a 4xx JSON answer for anything odd."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import httpx

from journeyman.api.routes.releases import MAX_DEPLOY_BYTES
from tests.api.support import ADMIN_TOKEN, CART_JOURNEY, Api

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NUDGE = """\
id: nudge
name: Nudge
entry: {event: cart_abandoned}
steps:
  - id: remind
    send: {template: nudge, channels: [email]}
"""
TEMPLATE = "{% block subject %}Your cart{% endblock %}<p>Come back</p>\n"
FILES = {"journeys/nudge.yaml": NUDGE, "templates/nudge/email.html": TEMPLATE}


async def deploy(api: Api, body: Any = None, **kwargs: Any) -> httpx.Response:
    assert api.client is not None
    headers = {**ADMIN, **kwargs.pop("headers", {})}
    if body is not None:
        kwargs["json"] = body
    return await api.client.post("/v1/deploy", headers=headers, **kwargs)


def tar_gz(files: dict[str, str], extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return buffer.getvalue()


async def test_a_dry_run_then_a_deploy_from_json_and_the_log(api: Api) -> None:
    await api.start(CART_JOURNEY)

    dry = await deploy(api, FILES, params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    assert dry.json()["published"] is False
    assert [c["summary"].split(",")[0] for c in dry.json()["changes"]] == ["nudge: new journey"]
    assert (await api.admin_get("/v1/releases")).json() == {"live": {}, "releases": []}

    done = await deploy(api, FILES, params={"message": "from CI", "by": "ci"})
    assert done.status_code == 200, done.text
    (release,) = done.json()["releases"]
    assert (release["journey_id"], release["by"], release["message"]) == (
        "nudge",
        "ci",
        "from CI",
    )
    log = (await api.admin_get("/v1/releases", journey="nudge")).json()
    assert log["live"] == {"nudge": {"version": release["version"], "enabled": True}}
    assert [r["id"] for r in log["releases"]] == [release["id"]]


async def test_a_tar_gz_deploy_names_the_template_it_changes(api: Api) -> None:
    await api.start(CART_JOURNEY)
    assert (await deploy(api, FILES)).status_code == 200
    edited = {**FILES, "templates/nudge/email.html": TEMPLATE.replace("back", "back soon")}

    answer = await deploy(api, content=tar_gz(edited), headers={"Content-Type": "application/gzip"})

    assert answer.status_code == 200, answer.text
    (change,) = answer.json()["changes"]
    assert change["changes"][-1].startswith("  ~ nudge/email.html: 1 line changed")
    assert answer.json()["published"] is True


async def test_a_journey_with_errors_is_a_422_naming_the_file_and_nothing_changes(
    api: Api,
) -> None:
    await api.start(CART_JOURNEY)
    broken = {**FILES, "journeys/nudge.yaml": NUDGE.replace("send:", "sned:")}

    answer = await deploy(api, broken)

    assert answer.status_code == 422
    body = answer.json()
    assert body["error"] == "the journeys have errors: nothing was published"
    assert {p["field"] for p in body["detail"]} == {"journeys/nudge.yaml"}
    assert all(p["line"] >= 1 and p["column"] >= 1 for p in body["detail"])
    assert (await api.admin_get("/v1/releases")).json()["releases"] == []


async def test_odd_bodies_get_a_4xx_saying_what_is_wrong(api: Api) -> None:
    await api.start(CART_JOURNEY)
    assert api.client is not None
    link = tarfile.TarInfo("journeys/link.yaml")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"../etc/passwd": "x"}}, 422, "under journeys/ or templates/"),
        ({"json": {"/abs/journeys/x.yaml": "x"}}, 422, "under journeys/ or templates/"),
        ({"json": {"journeys/x.yaml": 3}}, 422, "must be a string"),
        ({"json": ["journeys/x.yaml"]}, 422, "JSON object of paths"),
        ({"json": {}}, 422, "JSON object of paths"),
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "not JSON",
        ),
        ({"content": b"", "headers": {"Content-Type": "application/json"}}, 422, "empty"),
        ({"content": b"plain", "headers": {"Content-Type": "text/plain"}}, 415, "tar.gz"),
        ({"content": b"not gzip", "headers": {"Content-Type": "application/gzip"}}, 422, "tar"),
        (
            {"content": tar_gz(FILES, (link,)), "headers": {"Content-Type": "application/gzip"}},
            422,
            "only files and folders",
        ),
        (
            {
                "content": b"x" * (MAX_DEPLOY_BYTES + 1),
                "headers": {"Content-Type": "application/gzip"},
            },
            413,
            "at most",
        ),
    ]
    for kwargs, status, says in cases:
        answer = await deploy(api, **kwargs)
        assert answer.status_code == status, (kwargs.get("json"), answer.text)
        assert says in json.dumps(answer.json()), answer.text
    unauthorized = await api.client.post("/v1/deploy", json=FILES)
    assert unauthorized.status_code == 401
    assert (await api.client.get("/v1/releases")).status_code == 401
    assert (await api.admin_get("/v1/releases", limit=0)).status_code == 422
    assert (await api.admin_get("/v1/releases")).json()["releases"] == []


async def test_the_journey_page_shows_what_is_live_and_the_publish_log(api: Api) -> None:
    await api.start(CART_JOURNEY)
    assert api.client is not None
    first = (await deploy(api, FILES, params={"by": "ci", "message": "launch"})).json()
    version = first["releases"][0]["version"]

    page = await api.client.get("/journeys/nudge", auth=("anyone", ADMIN_TOKEN))

    assert page.status_code == 200, page.text
    assert f"Live: version <code>{version}</code>" in page.text
    assert "<td>ci</td>" in page.text and "<td>launch</td>" in page.text
    # Its file gone from the next deploy: switched off, and the page says so.
    gone = await deploy(api, {"templates/nudge/email.html": TEMPLATE})
    assert gone.json()["changes"][0]["summary"] == (
        "nudge: switched off (file deleted); takes no new entries"
    )
    page = await api.client.get("/journeys/nudge", auth=("anyone", ADMIN_TOKEN))
    assert "Switched off: takes no new entries" in page.text
