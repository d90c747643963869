"""Notice PDFs: zh-CN text, the problems, a site map and the evidence photos."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from dustpatrol.fonts import FontError, find_cjk_font
from tests.api.conftest import World
from tests.api.test_evidence_api import finding_with_frame
from tests.api.test_sites_api import imported as imported
from tests.conftest import unavailable

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


@pytest.fixture
def cjk_font() -> Path:
    try:
        return find_cjk_font()
    except FontError as exc:
        unavailable(f"no Chinese font for PDFs: {exc}")
        raise


def issued_with_photo(world: World) -> str:
    finding = finding_with_frame(world)
    confirmed = world.client.post(
        f"/findings/{finding['id']}/confirm", headers=world.login("analyst")
    )
    assert confirmed.status_code == 200, confirmed.text
    return str(confirmed.json()["notice"])


def test_the_notice_pdf_is_in_chinese_with_map_and_photo(imported: World, cjk_font: Path) -> None:
    number = issued_with_photo(imported)
    response = imported.client.get(f"/notices/{number}/pdf", headers=imported.login("housing"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert number in response.headers["content-disposition"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "notice.pdf").write_bytes(response.content)  # for a look by eye
    reader = PdfReader(io.BytesIO(response.content))
    text = "".join(page.extract_text() for page in reader.pages)
    for expected in (
        "扬尘污染问题整改通知书",
        number,
        "县住房和城乡建设局",
        "东关工地",
        "裸露土方",
        "625.0",  # the finding's area, 25 m x 25 m
        "位置示意图",
        "现场照片",
        "DJI_0001",
        "已下发",
    ):
        assert expected in text, expected
    images = [image for page in reader.pages for image in page.images]
    assert len(images) >= 2  # the site map and the evidence crop
    assert reader.metadata is not None and number in str(reader.metadata.title)


def test_another_bureau_gets_no_pdf(imported: World, cjk_font: Path) -> None:
    number = issued_with_photo(imported)
    assert (
        imported.client.get(f"/notices/{number}/pdf", headers=imported.login("urban")).status_code
        == 404
    )


def test_without_a_chinese_font_the_pdf_is_a_503_that_says_what_to_install(
    imported: World, tmp_path: Path
) -> None:
    number = issued_with_photo(imported)
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"not a font at all")
    app = imported.client.app
    settings = app.state.settings  # type: ignore[attr-defined]
    app.state.settings = settings.model_copy(  # type: ignore[attr-defined]
        update={"notices": settings.notices.model_copy(update={"pdf_font": not_a_font})}
    )
    response = imported.client.get(f"/notices/{number}/pdf", headers=imported.login("analyst"))
    assert response.status_code == 503
    assert "fonts-wqy-microhei" in response.json()["detail"]
    assert response.headers["content-type"].startswith("application/problem+json")


def test_font_lookup_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FontError, match="does not exist"):
        find_cjk_font(tmp_path / "missing.ttc")
    garbage = tmp_path / "garbage.ttf"
    garbage.write_bytes(b"\0" * 100)
    with pytest.raises(FontError, match="not a font with Chinese glyphs"):
        find_cjk_font(garbage)


def test_the_bureaus_rectification_photos_are_in_the_pdf(imported: World, cjk_font: Path) -> None:
    from tests.api.test_notices_api import move

    number = issued_with_photo(imported)
    assert move(imported, "housing", number, "rectified", "netted").status_code == 200
    response = imported.client.get(f"/notices/{number}/pdf", headers=imported.login("analyst"))
    reader = PdfReader(io.BytesIO(response.content))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "整改照片" in text and "after.jpg" in text and "已整改" in text
    assert len([image for page in reader.pages for image in page.images]) >= 3
