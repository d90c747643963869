"""Chinese site names, addresses, bureaus and permit numbers for the simulated district.

Every word is a (hanzi, pinyin) pair, so a name and its pinyin are built together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.kinds import SiteKind

Word = tuple[str, str]

TOWNS: tuple[Word, ...] = (
    ("城关", "Chengguan"),
    ("东湖", "Donghu"),
    ("西关", "Xiguan"),
    ("南湖", "Nanhu"),
    ("北城", "Beicheng"),
    ("柳林", "Liulin"),
    ("张秋", "Zhangqiu"),
    ("阿城", "Acheng"),
    ("石佛", "Shifo"),
    ("寿张", "Shouzhang"),
    ("定水", "Dingshui"),
    ("李台", "Litai"),
)
ROADS: tuple[Word, ...] = (
    ("人民", "Renmin"),
    ("建设", "Jianshe"),
    ("解放", "Jiefang"),
    ("振兴", "Zhenxing"),
    ("光明", "Guangming"),
    ("新华", "Xinhua"),
    ("文化", "Wenhua"),
    ("育才", "Yucai"),
    ("金水", "Jinshui"),
    ("黄河", "Huanghe"),
)
PROJECT_WORDS: tuple[Word, ...] = (
    ("锦绣", "Jinxiu"),
    ("阳光", "Yangguang"),
    ("御景", "Yujing"),
    ("华府", "Huafu"),
    ("翰林", "Hanlin"),
    ("和园", "Heyuan"),
    ("新城", "Xincheng"),
    ("丽景", "Lijing"),
    ("泰和", "Taihe"),
    ("嘉禾", "Jiahe"),
    ("鑫源", "Xinyuan"),
    ("恒通", "Hengtong"),
    ("宏达", "Hongda"),
    ("瑞丰", "Ruifeng"),
)
KIND_SUFFIX: dict[SiteKind, tuple[Word, ...]] = {
    SiteKind.CONSTRUCTION: (
        ("小区建设项目", " Residential Project"),
        ("商业综合体项目", " Commercial Complex Project"),
        ("学校新建工程", " New School Works"),
    ),
    SiteKind.DEMOLITION: (
        ("旧城改造拆除工程", " Old Town Demolition Works"),
        ("棚户区拆迁项目", " Shantytown Demolition Project"),
    ),
    SiteKind.FACTORY: (
        ("机械制造有限公司", " Machinery Co., Ltd."),
        ("建材有限公司", " Building Materials Co., Ltd."),
        ("化工有限公司", " Chemical Co., Ltd."),
    ),
    SiteKind.COAL_YARD: (
        ("煤炭经营部", " Coal Trading Yard"),
        ("燃料储运站", " Fuel Storage Station"),
    ),
    SiteKind.RESTAURANT: (
        ("饭店", " Restaurant"),
        ("农家菜馆", " Farmhouse Kitchen"),
        ("烧烤城", " Barbecue Hall"),
    ),
}
BUREAUS: dict[SiteKind, Word] = {
    SiteKind.CONSTRUCTION: (
        "县住房和城乡建设局",
        "County Housing and Urban-Rural Construction Bureau",
    ),
    SiteKind.DEMOLITION: (
        "县住房和城乡建设局",
        "County Housing and Urban-Rural Construction Bureau",
    ),
    SiteKind.FACTORY: ("县工业和信息化局", "County Industry and Information Technology Bureau"),
    SiteKind.COAL_YARD: ("县发展和改革局", "County Development and Reform Bureau"),
    SiteKind.RESTAURANT: ("县城市管理局", "County Urban Management Bureau"),
}
# Administrative division code of the county the permit numbers belong to (a Shandong county).
COUNTY_CODE = "371521"


@dataclass(frozen=True, slots=True)
class SiteIdentity:
    """The registry attributes of a simulated site."""

    name_zh: str
    name_pinyin: str
    address_zh: str
    bureau_zh: str
    bureau_en: str
    permit_number: str
    contact_phone: str


def site_identity(kind: SiteKind, index: int, rng: np.random.Generator) -> SiteIdentity:
    """A plausible, unique-by-index identity for the ``index``-th site of ``kind``."""
    town = TOWNS[int(rng.integers(len(TOWNS)))]
    word = PROJECT_WORDS[int(rng.integers(len(PROJECT_WORDS)))]
    suffixes = KIND_SUFFIX[kind]
    suffix = suffixes[int(rng.integers(len(suffixes)))]
    road = ROADS[int(rng.integers(len(ROADS)))]
    number = int(rng.integers(1, 999))
    # The index keeps names unique even when the random words repeat.
    name_zh = f"{town[0]}{word[0]}{suffix[0]}（{index + 1}）"
    name_pinyin = f"{town[1]} {word[1]}{suffix[1]} ({index + 1})"
    bureau = BUREAUS[kind]
    year = 2024 + int(rng.integers(3))
    permit = f"{COUNTY_CODE}{year}{int(rng.integers(1, 13)):02d}{index + 1:04d}0101"
    phone = f"1{int(rng.choice([35, 38, 39, 58, 86])):02d}{int(rng.integers(0, 10**8)):08d}"
    return SiteIdentity(
        name_zh=name_zh,
        name_pinyin=name_pinyin,
        address_zh=f"{town[0]}镇{road[0]}路{number}号",
        bureau_zh=bureau[0],
        bureau_en=bureau[1],
        permit_number=permit,
        contact_phone=phone,
    )
