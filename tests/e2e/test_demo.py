"""The whole loop, as `make demo` runs it, on a small district with reduced frames: a district
and its registry, a service on loopback, a patrol flown with DroneKit against the simulated
vehicle, frames uploaded and analysed while it flies, findings confirmed, notices issued,
bureaus reporting rectification (one of them falsely), a verification flight, notices closed
or sent back. Every step goes through the service's HTTP API."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dustpatrol.client import ServiceClient
from dustpatrol.demo import PASSWORDS, DemoResult, DemoSpec, run_demo
from dustpatrol.errors import DustpatrolError
from dustpatrol.settings import Settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Run = tuple[DemoSpec, DemoResult, list[str], str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("demo") / "run"
    spec = DemoSpec(
        seed=7,
        out=out,
        n_sites=10,
        extent_m=2000.0,
        render_scale=0.25,
        speedup=80.0,
        port=_free_port(),
    )
    said: list[str] = []
    result, service = run_demo(spec, Settings(), said.append)
    yield spec, result, said, service.base_url
    service.stop()


def test_the_loop_runs_from_district_to_closed_notices(demo: Run) -> None:
    spec, result, said, base_url = demo
    first, second = result.flights
    assert first.frames > 20
    assert result.notices_issued, "the detector found nothing to notify on a district of problems"
    admin = ServiceClient(base_url, username="admin", password=PASSWORDS["admin"])
    # every frame reached the service and was placed on the ground
    # every frame reached the service, was placed on the ground and analysed there (or kept
    # out of detection with the reason)
    frames = admin.get(f"/flights/{first.flight_id}/frames")
    assert all(f["status"] == "ready" for f in frames)
    assert all(f["analysis"] == "done" or f["analysis_note"] for f in frames)
    assert sum(f["analysis"] == "done" for f in frames) > first.frames / 2
    stored = admin.get("/findings", flight=first.flight_id)
    assert len(stored) == len(first.findings["features"]) > 0
    # each notice's fate follows what the verification flight found at its site, judged by
    # the rules that issue notices
    found_again = second.problems(Settings().notices)
    for number in result.notices_issued:
        notice = admin.get(f"/notices/{number}")
        states = [e["to_state"] for e in notice["events"]]
        assert states[:3] == ["issued", "acknowledged", "rectified"], states
        if (notice["site"], notice["finding_class"]) in found_again:
            assert notice["state"] == "acknowledged" and number in result.notices_reopened
        else:
            assert notice["state"] == "closed" and states[-2:] == ["verified", "closed"]
        assert (spec.out / "notices" / f"{number}.pdf").read_bytes().startswith(b"%PDF")
    # the patrol reports: the first flight inspected every site it covered; the verification
    # flight compares each re-inspected site with the first
    report1 = admin.get(f"/flights/{first.flight_id}/report")
    assert report1["flight"]["frames"] == first.frames
    assert len(report1["sites_inspected"]) >= spec.n_sites - 1
    noticed = {admin.get(f"/notices/{n}")["site"] for n in result.notices_issued}
    report2 = admin.get(f"/flights/{second.flight_id}/report")
    rechecked = {s["site_id"]: s for s in report2["sites_inspected"]}
    assert noticed <= set(rechecked)
    assert all(rechecked[s]["previous"]["flight"] == first.flight_id for s in noticed)
    for path in result.reports:
        assert path.read_bytes().startswith(b"%PDF")
    evaluation = json.loads((spec.out / "evaluation.json").read_text())
    assert evaluation["sites"]["violating"] > 0
    # the verification judged against the truth after the bureaus' work: every notice
    # reported rectified is counted once, as rectified or not, and each reopened one as
    # rightly or wrongly sent back
    checked = evaluation["verification"]
    assert checked["rectified"] + checked["not_rectified"] == len(result.notices_issued)
    assert sorted(checked["sent_back_rightly"] + checked["sent_back_wrongly"]) == sorted(
        result.notices_reopened
    )
    assert checked["not_rectified"] >= 1  # the bureau that claimed work it did not do
    assert any(line.startswith("7/7") for line in said)


def test_a_bureau_sees_only_its_own_notices(demo: Run) -> None:
    _, result, _, base_url = demo
    with ServiceClient(base_url, username="admin", password=PASSWORDS["admin"]) as admin:
        everything = {n["number"]: n["bureau"] for n in admin.get("/notices", limit=500)}
    for username, password in result.logins.items():
        if not username.startswith("bureau"):
            continue
        with ServiceClient(base_url, username=username, password=password) as bureau:
            own = bureau.get("/notices", limit=500)
            assert len({everything[n["number"]] for n in own}) <= 1


def test_the_demo_refuses_a_folder_it_did_not_make_and_a_busy_port(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "survey.jpg").write_bytes(b"field data")
    with pytest.raises(DustpatrolError, match="was not made by the demo"):
        run_demo(DemoSpec(out=precious, port=_free_port()), Settings(), print)
    assert (precious / "survey.jpg").exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DustpatrolError, match="in use"):
            run_demo(DemoSpec(out=tmp_path / "new", port=port), Settings(), print)
