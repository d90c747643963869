"""Hand-made JPEG frames with the metadata quirks of real drone files."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

DJI_NS = "http://www.dji.com/drone-dji/1.0/"


def xmp_attributes(values: dict[str, str]) -> bytes:
    """An XMP packet with drone-dji values as attributes, as DJI cameras write them."""
    attributes = " ".join(f'drone-dji:{k}="{v}"' for k, v in values.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="DJI Meta Data" xmlns:drone-dji="{DJI_NS}" {attributes}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def xmp_elements(values: dict[str, str]) -> bytes:
    """The same values as nested elements, as exiftool rewrites them."""
    elements = "".join(f"<drone-dji:{k}>{v}</drone-dji:{k}>" for k, v in values.items())
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:drone-dji="{DJI_NS}">{elements}</rdf:Description>'
        "</rdf:RDF></x:xmpmeta>"
    ).encode()


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    d = int(value)
    m = int((value - d) * 60)
    s = round(((value - d) * 60 - m) * 60 * 10_000)
    return IFDRational(d, 1), IFDRational(m, 1), IFDRational(s, 10_000)


def make_jpeg(
    *,
    gps: dict[int, Any] | None = None,
    xmp: bytes | None = None,
    exif_extra: dict[int, Any] | None = None,
    size: tuple[int, int] = (64, 48),
) -> bytes:
    image = Image.new("RGB", size, (120, 110, 90))
    exif = Image.Exif()
    exif[0x010F] = "DJI"
    exif[0x0110] = "M3E"
    if gps is not None:
        exif[0x8825] = gps
    if exif_extra:
        exif[0x8769] = exif_extra
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {"exif": exif.tobytes()}
    if xmp is not None:
        kwargs["xmp"] = xmp
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def standard_gps(
    lat: float = 36.481234, lon: float = 115.452345, altitude: float = 135.5
) -> dict[int, Any]:
    return {
        1: "N",
        2: dms(lat),
        3: "E",
        4: dms(lon),
        5: 0,
        6: IFDRational(round(altitude * 100), 100),
    }
