"""The bad-input corpus, generated on the fly (nothing binary is committed).

Each :class:`Case` is a file plus what the kit must do with it: either raise a given kit
exception whose message names the file and matches ``problem``, or decode it to a valid
[0, 1] image (odd but legal files such as RGB, big-endian or multi-frame DICOMs), optionally
with a warning that names the file. The fuzz tests reuse the valid files as mutation seeds.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radjepa_lab.data.dicom import dicom_dataset
from radjepa_lab.errors import DataError, DicomReadError, ImageReadError


@dataclass
class Case:
    """One corpus file and the expected outcome."""

    name: str
    path: Path
    error: type[Exception] | None = None  # None: must decode
    problem: str = ""  # regex the error message must match (besides the file name)
    warns: str = ""  # regex of a warning that must name the file ("" = none required)
    check: Callable[[np.ndarray], None] | None = None  # extra check on a decoded image
    tags: dict[str, object] = field(default_factory=dict)


# ----------------------------------------------------------------------------- DICOM builders


def save_dicom(ds, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(rows: int = 16, cols: int = 16, hi: int = 4000) -> np.ndarray:
    """A uint16 ramp: dark top-left, bright bottom-right (so orientation is checkable)."""
    return np.linspace(0, hi, rows * cols).reshape(rows, cols).astype(np.uint16)


def valid_dicom(path: Path, stored: np.ndarray | None = None) -> Path:
    stored = ramp() if stored is None else stored
    ds = dicom_dataset(*stored.shape)
    ds.PixelData = np.ascontiguousarray(stored.astype("<u2")).tobytes()
    return save_dicom(ds, path)


def pixel_data_offset(raw: bytes) -> int:
    """Byte offset of the (7FE0,0010) PixelData tag in an explicit-VR little-endian file."""
    return raw.rindex(b"\xe0\x7f\x10\x00")


def _expect_ramp(img: np.ndarray) -> None:
    assert img[0, 0] == 0.0 and img[-1, -1] == 1.0  # stretched, air dark, orientation kept
    assert np.all(np.diff(img.ravel()) >= 0)


def dicom_corpus(root: Path) -> list[Case]:
    """Every DICOM case of the issue; files are written under ``root``."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRBigEndian, JPEGLSLossless

    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    good = valid_dicom(root / "good.dcm")
    raw = good.read_bytes()
    pix = pixel_data_offset(raw)
    cuts = {"preamble": 64, "magic": 130, "meta": 200, "before_pixels": pix,
            "pixel_header": pix + 6, "pixel_middle": pix + 12 + (len(raw) - pix - 12) // 2,
            "last_byte": len(raw) - 1}
    for label, off in cuts.items():
        p = root / f"truncated_{label}.dcm"
        p.write_bytes(raw[:off])
        cases.append(Case(f"dicom-truncated-{label}", p, DicomReadError,
                          r"truncated|not a DICOM|no PixelData|corrupt",
                          tags={"offset": off}))
    p = root / "empty.dcm"
    p.write_bytes(b"")
    cases.append(Case("dicom-zero-bytes", p, DicomReadError, r"empty \(0 bytes\)"))

    ds = dicom_dataset(16, 16)
    cases.append(Case("dicom-no-pixeldata", save_dicom(ds, root / "no_pixels.dcm"),
                      DicomReadError, r"no PixelData"))

    p = root / "wrong_magic.dcm"
    p.write_bytes(raw[:128] + b"DICX" + raw[132:])
    cases.append(Case("dicom-wrong-magic", p, DicomReadError, r"not a DICOM file"))

    ds = dicom_dataset(16, 16, JPEGLSLossless)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(32) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    cases.append(Case("dicom-compressed-no-decoder", save_dicom(ds, root / "jpegls.dcm"),
                      DicomReadError, r"JPEG-LS.*no installed decoder.*pip install"))

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = np.arange(8, dtype=np.uint8)[None, :] * 30  # red ramp left -> right
    ds = dicom_dataset(8, 8, bits=8, spp=3, photometric="RGB")
    ds.PixelData = rgb.tobytes()

    def _rgb_check(img: np.ndarray) -> None:
        assert img[:, 0].max() == 0.0 and img[:, -1].min() == 1.0

    cases.append(Case("dicom-rgb", save_dicom(ds, root / "rgb.dcm"), warns=r"colour DICOM",
                      check=_rgb_check))

    stored = np.linspace(-2000, 2000, 64).reshape(8, 8).astype(np.int16)
    ds = dicom_dataset(8, 8, signed=True)
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.PixelData = stored.astype("<i2").tobytes()

    def _signed_check(img: np.ndarray) -> None:
        expect = (stored.astype(np.float64) + 2000.0) / 4000.0  # slope 1: order kept
        np.testing.assert_allclose(img, expect, atol=1e-5)

    cases.append(Case("dicom-signed-negative-intercept", save_dicom(ds, root / "signed.dcm"),
                      check=_signed_check))

    be = ramp(8, 8)
    ds = dicom_dataset(8, 8, ExplicitVRBigEndian)
    ds.PixelData = be.astype(">u2").tobytes()
    cases.append(Case("dicom-big-endian", save_dicom(ds, root / "big_endian.dcm"),
                      check=_expect_ramp))

    frames = np.stack([ramp(8, 8, hi=1000 * (k + 1)) for k in range(4)])
    frames[0] = ramp(8, 8)
    ds = dicom_dataset(8, 8)
    ds.NumberOfFrames = 4
    ds.PixelData = frames.astype("<u2").tobytes()
    cases.append(Case("dicom-4-frames", save_dicom(ds, root / "four_frames.dcm"),
                      warns=r"multi-frame DICOM \(4 frames\)", check=_expect_ramp))

    for label, bad in (("nan", np.nan), ("inf", np.inf)):
        f = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
        f[1, 1] = bad
        ds = dicom_dataset(4, 4, bits=32)
        for k in ("BitsStored", "HighBit", "PixelRepresentation"):
            del ds[k]
        ds.FloatPixelData = f.tobytes()
        cases.append(Case(f"dicom-float-{label}-pixel", save_dicom(ds, root / f"{label}.dcm"),
                          DicomReadError, r"NaN/Inf"))
    cases += display_corpus(root)
    return cases


# ----------------------------------------------------------------------------- DICOM display


def lut_item(descriptor: list[int], data: list[int] | np.ndarray):
    """One LUT item (LUTDescriptor + LUTData as US) for a Modality/VOI/Presentation LUT."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [int(v) for v in descriptor]
    item.add_new(0x00283006, "US", [int(v) for v in data])  # LUTData
    return item


def _expect(want: np.ndarray, atol: float = 2e-5) -> Callable[[np.ndarray], None]:
    def check(img: np.ndarray) -> None:
        np.testing.assert_allclose(img, want, atol=atol)

    return check


def display_corpus(root: Path) -> list[Case]:
    """Every attribute that changes how a DICOM image is displayed: honoured (the image's
    intensities and orientation are checked against the standard's formula) or refused naming
    the attribute."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    cases: list[Case] = []
    x = ramp(8, 8).astype(np.float64)  # 0 (top-left) .. 4000 (bottom-right)
    stretched = x / 4000.0

    def mono(name: str, error: type[Exception] | None = None, problem: str = "",
             check: Callable[[np.ndarray], None] | None = None, warns: str = "",
             stored: np.ndarray | None = None, raw: bytes | None = None,
             photometric: str = "MONOCHROME2", bits_stored: int | None = None,
             signed: bool = False, **tags: object) -> None:
        stored = ramp(8, 8) if stored is None else stored
        ds = dicom_dataset(*stored.shape[-2:], bits_stored=bits_stored, signed=signed,
                           photometric=photometric)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.PixelData = raw if raw is not None else np.ascontiguousarray(
            stored.astype("<i2" if signed else "<u2")).tobytes()
        path = save_dicom(ds, root / f"{name}.dcm")
        cases.append(Case(f"dicom-{name}", path, error, problem, warns, check))

    # -- Modality LUT
    mono("rescale-slope-0", DicomReadError, r"RescaleSlope is 0", RescaleSlope=0,
         RescaleIntercept=0)
    mono("rescale-slope-alone", DicomReadError, r"RescaleSlope is present without",
         RescaleSlope=2)
    mono("modality-lut-sequence", check=_expect(1.0 - stretched),  # a descending LUT: inverted
         ModalityLUTSequence=Sequence([lut_item([4001, 0, 16], 4000 - np.arange(4001))]))
    mono("modality-lut-12-bit", DicomReadError, r"ModalityLUTSequence LUTDescriptor bit depth 12",
         ModalityLUTSequence=Sequence([lut_item([4001, 0, 12], np.arange(4001))]))
    # -- VOI LUT Sequence, any descriptor bit depth: output / (2**bits - 1)
    for bits in (8, 12, 16):
        data = np.round(np.linspace(0, 2**bits - 1, 4001) ** 1.0).astype(np.int64)
        mono(f"voi-lut-{bits}-bit", check=_expect(data[x.astype(int)] / (2**bits - 1)),
             VOILUTSequence=Sequence([lut_item([4001, 0, bits], data)]))
    mono("voi-lut-data-beyond-descriptor", DicomReadError,
         r"VOILUTSequence LUTData has values up to 5000 but its LUTDescriptor says 12 bits",
         VOILUTSequence=Sequence([lut_item([4001, 0, 12], np.linspace(0, 5000, 4001))]))
    mono("voi-lut-9-bit", DicomReadError, r"VOILUTSequence LUTDescriptor bit depth 9",
         VOILUTSequence=Sequence([lut_item([4001, 0, 9], np.arange(4001) // 8)]))
    mono("voi-lut-length", DicomReadError, r"VOILUTSequence LUTData holds 100 entries",
         VOILUTSequence=Sequence([lut_item([4001, 0, 16], np.arange(100))]))
    # -- windows (PS3.3 C.11.2.1.2/3)
    mono("window-linear", check=_expect(np.clip((x - 1999.5) / 999 + 0.5, 0, 1)),
         WindowCenter=2000, WindowWidth=1000)
    mono("window-linear-exact", check=_expect(np.clip((x - 2000) / 1000 + 0.5, 0, 1)),
         WindowCenter=2000, WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    mono("window-sigmoid", check=_expect(1 / (1 + np.exp(-4 * (x - 2000) / 1000)), 1e-4),
         WindowCenter=2000, WindowWidth=1000, VOILUTFunction="SIGMOID")
    mono("window-negative-slope",  # below the window is black whatever the slope's sign
         check=_expect(np.clip(((4000 - x) - 1999.5) / 2000 + 0.5, 0, 1)),
         RescaleSlope=-1, RescaleIntercept=4000, WindowCenter=2000, WindowWidth=2001)
    mono("voi-function-unknown", DicomReadError, r"VOILUTFunction 'CUBIC' is not one of",
         WindowCenter=2000, WindowWidth=1000, VOILUTFunction="CUBIC")
    mono("window-width-0", DicomReadError, r"WindowWidth 0 is not a valid width",
         WindowCenter=2000, WindowWidth=0)
    mono("window-center-alone", DicomReadError, r"WindowCenter is present without",
         WindowCenter=2000)
    # -- presentation: MONOCHROME1 / Presentation LUT Shape / Presentation LUT Sequence
    mono("monochrome1", check=_expect(1.0 - stretched), photometric="MONOCHROME1")
    mono("monochrome1-inverse", check=_expect(1.0 - stretched), photometric="MONOCHROME1",
         PresentationLUTShape="INVERSE")  # one inversion, not two
    mono("monochrome2-inverse", check=_expect(1.0 - stretched), PresentationLUTShape="INVERSE")
    mono("monochrome2-identity", check=_expect(stretched), PresentationLUTShape="IDENTITY")
    mono("monochrome1-identity", DicomReadError,
         r"PresentationLUTShape IDENTITY contradicts PhotometricInterpretation MONOCHROME1",
         photometric="MONOCHROME1", PresentationLUTShape="IDENTITY")
    mono("plut-shape-unknown", DicomReadError, r"PresentationLUTShape 'LOG' is not one of",
         PresentationLUTShape="LOG")
    mono("plut-sequence", check=_expect(1.0 - stretched, 2.5e-4),  # a descending 12-bit P-LUT
         PresentationLUTSequence=Sequence([lut_item([4096, 0, 12], 4095 - np.arange(4096))]))
    mono("photometric-unknown", DicomReadError, r"PhotometricInterpretation 'XYZ'",
         photometric="XYZ")
    # -- pixel padding: left out of the stretch, shown black
    padded = ramp(8, 8)
    padded[:, 0] = 65535
    pad = padded == 65535
    lo = float(padded[~pad].min())
    mono("pixel-padding", stored=padded, PixelPaddingValue=65535,
         check=_expect(np.where(pad, 0.0, (padded - lo) / (4000 - lo))))
    ranged = padded.copy()
    ranged[::2, 0] = 65000
    mono("pixel-padding-range", stored=ranged, PixelPaddingValue=65000,
         PixelPaddingRangeLimit=65535,
         check=_expect(np.where(pad, 0.0, (padded - lo) / (4000 - lo))))
    mono("pixel-padding-everywhere", DicomReadError, r"PixelPaddingValue .* covers every pixel",
         stored=np.full((8, 8), 7, np.uint16), PixelPaddingValue=7)
    # -- stored bits: garbage above BitsStored is masked, signed values sign-extended
    garbage = (ramp(8, 8) & 0x0FFF) | 0xA000
    mono("12-bit-garbage-above", check=_expect((ramp(8, 8) & 0x0FFF) / 4000.0),
         bits_stored=12, raw=garbage.astype("<u2").tobytes())
    s12 = np.linspace(-2048, 2047, 64).astype(np.int16).reshape(8, 8)
    mono("signed-12-bit-garbage-above", check=_expect((s12 + 2048.0) / 4095.0),
         bits_stored=12, signed=True,
         raw=((s12.view(np.uint16) & 0x0FFF) | 0x5000).astype("<u2").tobytes())
    mono("highbit-not-bitsstored-1", DicomReadError, r"HighBit 15 with BitsStored 12",
         bits_stored=12, HighBit=15)
    mono("bitsstored-above-allocated", DicomReadError, r"BitsStored 20 must lie in",
         BitsStored=20, HighBit=19)

    # -- colour: palette and YBR
    idx = np.arange(64, dtype=np.uint8).reshape(8, 8)
    ds = dicom_dataset(8, 8, bits=8, photometric="PALETTE COLOR")
    for c in ("Red", "Green", "Blue"):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData",
                ((255 - np.arange(256)) * 257).astype("<u2").tobytes())  # a reversed gray
    ds.PixelData = idx.tobytes()
    cases.append(Case("dicom-palette-color", save_dicom(ds, root / "palette.dcm"),
                      warns=r"PALETTE COLOR.*palette", check=_expect((63 - idx) / 63.0, 1e-4)))
    ds = dicom_dataset(8, 8, bits=8, photometric="PALETTE COLOR")
    ds.PixelData = idx.tobytes()
    cases.append(Case("dicom-palette-without-palette", save_dicom(ds, root / "palette0.dcm"),
                      DicomReadError, r"PALETTE COLOR.*Palette Color Lookup Table"))
    y = np.linspace(0, 240, 64).astype(np.uint8).reshape(8, 8)
    ybr = np.stack([y, np.full_like(y, 128), np.full_like(y, 128)], -1)
    ds = dicom_dataset(8, 8, bits=8, spp=3, photometric="YBR_FULL")
    ds.PixelData = ybr.tobytes()
    cases.append(Case("dicom-ybr-full", save_dicom(ds, root / "ybr.dcm"), warns=r"colour DICOM",
                      check=_expect(y / 240.0, 6e-3)))
    ds = dicom_dataset(8, 8, bits=8, spp=3, photometric="MONOCHROME2")
    ds.PixelData = ybr.tobytes()
    cases.append(Case("dicom-3-samples-monochrome", save_dicom(ds, root / "spp3.dcm"),
                      DicomReadError, r"PhotometricInterpretation 'MONOCHROME2' does not match "
                      r"SamplesPerPixel 3"))

    # -- enhanced multi-frame: each frame's window lives in a functional group
    frames = np.stack([ramp(8, 8), ramp(8, 8)])
    ds = dicom_dataset(8, 8)
    ds.NumberOfFrames = 2
    per_frame = []
    for center in (1000, 3000):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 2
        group = Dataset()
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    pvt, shared = Dataset(), Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, 0, "US"
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PixelData = frames.astype("<u2").tobytes()
    cases.append(Case("dicom-enhanced-frame-window", save_dicom(ds, root / "enhanced.dcm"),
                      warns=r"multi-frame", check=_expect(np.clip(x - 999.5 + 0.5, 0, 1))))

    # -- a DICOMDIR is an index, not an image
    (root / "dicomdir").mkdir(exist_ok=True)
    cases.append(Case("dicom-dicomdir", save_dicom(dicomdir_dataset(), root / "dicomdir" /
                                                   "DICOMDIR"), DicomReadError, r"is a DICOMDIR"))
    return cases


def dicomdir_dataset():
    """A minimal DICOMDIR: Media Storage Directory SOP class, a (here empty) record sequence."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "SYNTHETIC"
    ds.DirectoryRecordSequence = Sequence([])
    return ds


# ----------------------------------------------------------------------------- image builders


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_big_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit gray PNG of any size, streamed row by row (the writer never holds the image)."""
    row = b"\x00" + (bytes(range(256)) * (width // 256 + 1))[:width]  # filter 0 + a ramp
    comp = zlib.compressobj(1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        body = [comp.compress(row) for _ in range(height)]
        body.append(comp.flush())
        f.write(_png_chunk(b"IDAT", b"".join(body)))
        f.write(_png_chunk(b"IEND", b""))
    return path


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def image_corpus(root: Path) -> list[Case]:
    """Every image case of the issue except the 10000 x 10000 one (its own test)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    rng = np.random.default_rng(0)
    good = png_bytes(rng.integers(0, 256, (64, 64), dtype=np.uint8))

    p = root / "zero.png"
    p.write_bytes(b"")
    cases.append(Case("png-zero-bytes", p, ImageReadError, r"empty \(0 bytes\)"))
    p = root / "truncated.png"
    p.write_bytes(good[: len(good) // 2])
    cases.append(Case("png-truncated", p, ImageReadError, r"cannot decode.*truncated"))
    bad = bytearray(good)
    bad[70:90] = bytes(20)  # inside the IDAT stream
    p = root / "corrupt_idat.png"
    p.write_bytes(bytes(bad))
    cases.append(Case("png-corrupt-idat", p, ImageReadError, r"cannot decode"))
    p = root / "garbage.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    cases.append(Case("png-garbage-after-signature", p, ImageReadError, r"cannot decode"))
    p = root / "not_an_image.png"
    p.write_text("path,label\nx.png,1\n")
    cases.append(Case("png-text-file", p, ImageReadError, r"cannot decode"))

    a16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(a16).save(root / "sixteen_bit.png")

    def _check16(img: np.ndarray) -> None:
        np.testing.assert_allclose(img, a16 / 65535.0, atol=1e-6)

    cases.append(Case("png-16-bit", root / "sixteen_bit.png", check=_check16))

    Image.fromarray(np.array([[200]], np.uint8)).save(root / "one_pixel.png")

    def _check1(img: np.ndarray) -> None:
        assert img.shape == (1, 1) and abs(float(img[0, 0]) - 200 / 255) < 1e-6

    cases.append(Case("png-1x1", root / "one_pixel.png", check=_check1))

    for label, bad_val in (("nan", np.nan), ("inf", np.inf), ("neg-inf", -np.inf)):
        f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
        f[3, 3] = bad_val
        Image.fromarray(f, mode="F").save(root / f"{label}.tif")
        cases.append(Case(f"tiff-{label}-pixel", root / f"{label}.tif", ImageReadError,
                          r"NaN/Inf"))
    cases += format_corpus(root)
    return cases


# ----------------------------------------------------------------------------- image formats


def write_tiff(path: Path, pages: list[np.ndarray], photometric: int = 1,
               colormap: np.ndarray | None = None, orientation: int | None = None) -> Path:
    """A minimal little-endian baseline TIFF (uncompressed, one strip per page), so every
    photometric interpretation, sample format and page count is exactly what the test says."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    next_ifd = 4
    for arr in pages:
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape
        fmt = {"u": 1, "i": 2, "f": 3}[arr.dtype.kind]
        data_off = len(out)
        out += arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        out += b"\x00" * (len(out) % 2)
        tags = {256: (4, [w]), 257: (4, [h]), 258: (3, [arr.dtype.itemsize * 8]),
                259: (3, [1]), 262: (3, [photometric]), 273: (4, [data_off]), 277: (3, [1]),
                278: (4, [h]), 279: (4, [arr.nbytes]), 339: (3, [fmt])}
        if colormap is not None:
            tags[320] = (3, [int(v) for v in np.asarray(colormap).ravel()])
        if orientation is not None:
            tags[274] = (3, [orientation])
        blobs = {}
        for tag, (typ, vals) in tags.items():
            raw = struct.pack(f"<{len(vals)}{'H' if typ == 3 else 'I'}", *vals)
            if len(raw) > 4:
                blobs[tag] = len(out)
                out += raw + b"\x00" * (len(raw) % 2)
        struct.pack_into("<I", out, next_ifd, len(out))
        out += struct.pack("<H", len(tags))
        for tag in sorted(tags):
            typ, vals = tags[tag]
            raw = struct.pack(f"<{len(vals)}{'H' if typ == 3 else 'I'}", *vals)
            value = struct.pack("<I", blobs[tag]) if tag in blobs else raw.ljust(4, b"\x00")
            out += struct.pack("<HHI", tag, typ, len(vals)) + value
        next_ifd = len(out)
        out += b"\x00\x00\x00\x00"
    path.write_bytes(bytes(out))
    return path


def format_corpus(root: Path) -> list[Case]:
    """What the formats' own metadata says about display: palettes, alpha, 16-bit and sBIT,
    gAMA and ICC profiles, TIFF WhiteIsZero / sample formats / pages / orientation, JPEG EXIF
    orientation. Each is honoured (pixels checked) or refused naming the attribute."""
    from PIL import Image, ImageCms, PngImagePlugin

    cases: list[Case] = []
    g8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))  # dark left, bright right
    u8 = g8 / 255.0

    def png(name: str, img: Image.Image, error: type[Exception] | None = None,
            problem: str = "", check: Callable[[np.ndarray], None] | None = None,
            warns: str = "", **save: object) -> None:
        path = root / f"{name}.png"
        img.save(path, **save)
        cases.append(Case(f"png-{name}", path, error, problem, warns, check))

    gray_pal = [v for i in range(256) for v in (255 - i,) * 3]  # index i shows 255 - i
    p_img = Image.fromarray(g8, mode="L").convert("P")
    p_img.putpalette(gray_pal)
    p_img.frombytes(g8.tobytes())
    png("palette", p_img, check=_expect(1.0 - u8))
    colour = Image.fromarray(g8, mode="L").convert("P")
    colour.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    png("palette-colour", colour, warns=r"colour image")
    la = Image.merge("LA", [Image.fromarray(g8), Image.new("L", (64, 16), 255)])
    png("alpha-opaque", la, check=_expect(u8))
    rgba = Image.fromarray(np.dstack([g8, g8, g8, np.full_like(g8, 255)]), mode="RGBA")
    rgba.putpixel((3, 3), (10, 10, 10, 0))
    png("alpha-transparent", rgba, ImageReadError, r"transparent pixels")
    png("trns-gray", Image.fromarray(g8), ImageReadError, r"transparent pixels \(.*tRNS",
        transparency=int(g8[0, 5]))

    v12 = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (16, 1))
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    png("16-bit-sbit-12", Image.fromarray(v12), check=_expect(v12 / 4095.0), pnginfo=info)
    scaled = (v12.astype(np.uint32) * 16).astype(np.uint16)  # what the PNG spec asks of writers
    png("16-bit-sbit-12-scaled", Image.fromarray(scaled), check=_expect(scaled / 65535.0),
        pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 100000))  # linear samples: brightened for display
    png("gamma-1", Image.fromarray(g8), check=_expect(u8 ** (1 / 2.2), 1e-4), pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 45455))  # sRGB's own: nothing to do
    png("gamma-srgb", Image.fromarray(g8), check=_expect(u8), pnginfo=info)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    png("icc-srgb", Image.fromarray(np.dstack([g8] * 3)), check=_expect(u8, 2.5 / 255),
        icc_profile=srgb)
    png("icc-mismatch", Image.fromarray(g8), ImageReadError, r"ICC profile cannot be applied",
        icc_profile=srgb)  # an RGB profile on a gray image
    png("1-bit", Image.fromarray(g8 >= 128), check=_expect((g8 >= 128).astype(float)))

    def tiff(name: str, pages: list[np.ndarray], check=None, error=None, problem="",
             warns="", **kw: object) -> None:
        path = write_tiff(root / f"{name}.tif", pages, **kw)
        cases.append(Case(f"tiff-{name}", path, error, problem, warns, check))

    g16 = (g8.astype(np.uint16) * 257)
    tiff("white-is-zero-8", [g8], _expect(1.0 - u8), photometric=0)
    tiff("white-is-zero-16", [g16], _expect(1.0 - g16 / 65535.0), photometric=0)
    tiff("white-is-zero-float", [u8.astype(np.float32)], _expect(1.0 - u8, 1e-6), photometric=0)
    tiff("palette", [g8], _expect(1.0 - u8), photometric=3,
         colormap=np.stack([(255 - np.arange(256)) * 257] * 3))
    tiff("16-bit", [g16], _expect(g16 / 65535.0))
    tiff("int16-signed", [(g16.astype(np.int32) - 32768).astype(np.int16)], _expect(g8 / 252.0),
         warns=r"not in \[0, 1\]; min-max stretched")
    tiff("uint32", [g16.astype(np.uint32)], _expect(g8 / 252.0), warns=r"min-max stretched")
    tiff("float32", [u8.astype(np.float32)], _expect(u8, 1e-6))
    tiff("float64", [u8], error=ImageReadError, problem=r"cannot decode")
    tiff("two-pages", [g8, 255 - g8], _expect(u8), warns=r"TIFF with 2 pages/frames")
    tiff("orientation-180", [g8], _expect(u8[::-1, ::-1]), orientation=3)

    grad = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))  # 48 x 64, dark left
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored image must be turned 90 degrees clockwise for display

    def rotated(img: np.ndarray) -> None:
        assert img.shape == (64, 48)  # rows and columns swapped
        rows = img.mean(axis=1)
        assert rows[:8].mean() < 0.1 and rows[-8:].mean() > 0.9  # dark top, bright bottom
        assert np.ptp(img.mean(axis=0)) < 0.05

    Image.fromarray(grad).save(root / "exif6.jpg", quality=95, exif=exif)
    cases.append(Case("jpeg-exif-orientation-6", root / "exif6.jpg", check=rotated))
    return cases


def path_corpus(root: Path) -> list[Case]:
    """Paths that are not readable files: missing, a folder, a dangling link."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "folder.png").mkdir(exist_ok=True)
    link = root / "dangling.png"
    if not link.is_symlink():
        link.symlink_to(root / "gone.png")
    return [
        Case("path-missing", root / "missing.png", DataError, r"does not exist"),
        Case("path-missing-dcm", root / "missing.dcm", DataError, r"does not exist"),
        Case("path-folder", root / "folder.png", DataError, r"is a folder"),
        Case("path-dangling-symlink", link, DataError, r"does not exist"),
    ]


# ----------------------------------------------------------------------------- configs

# (``--set`` item, field the error must name): each must be refused before anything runs, from
# the command line, from Python and from a checkpoint's stored config.
BAD_CONFIGS = [
    ("lr=-1e-3", "TrainConfig.lr"),
    ("lr=0", "TrainConfig.lr"),
    ("lr=1e999", "TrainConfig.lr"),  # inf
    ("start_lr=-1", "TrainConfig.start_lr"),
    ("grad_clip=0", "TrainConfig.grad_clip"),
    ("grad_clip=-1.0", "TrainConfig.grad_clip"),
    ("steps=abc", "TrainConfig.steps"),
    ("steps=0", "TrainConfig.steps"),
    ("steps=10.5", "TrainConfig.steps"),
    ("batch_size=0", "TrainConfig.batch_size"),
    ("log_every=0", "TrainConfig.log_every"),
    ("ckpt_every=0", "TrainConfig.ckpt_every"),
    ("monitor_batch=0", "TrainConfig.monitor_batch"),
    ("n_train=0", "TrainConfig.n_train"),
    ("num_workers=-1", "TrainConfig.num_workers"),
    ("betas=(0.9, 1.0)", "TrainConfig.betas"),
    ("betas=(-0.1, 0.999)", "TrainConfig.betas"),
    ("betas=(0.9,)", "TrainConfig.betas"),
    ("ema=(0.99, 1.01)", "TrainConfig.ema"),
    ("ema=(1.0, 0.99)", "TrainConfig.ema"),
    ("wd=(-0.1, 0.4)", "TrainConfig.wd"),
    ("wd=(0.04, 0.4, 0.5)", "TrainConfig.wd"),
    ("seed=-1", "TrainConfig.seed"),
    ("seed=1.5", "TrainConfig.seed"),
    ("loss=l3", "TrainConfig.loss"),
    ("compile=1", "TrainConfig.compile"),
    ("cache_data='yes'", "TrainConfig.cache_data"),
    ("bf16=1", "TrainConfig.bf16"),
    ("smooth_l1_beta=-1", "TrainConfig.smooth_l1_beta"),
    ("phantom_size=0", "TrainConfig.phantom_size"),
    ("warmup=-1", "TrainConfig.warmup"),
    ("model.patch_size=0", "ModelConfig.patch_size"),
    ("model.patch_size=128", "ModelConfig.patch_size"),
    ("model.num_heads=0", "ModelConfig.num_heads"),
    ("model.depth=0", "ModelConfig.depth"),
    ("model.embed_dim=-8", "ModelConfig.embed_dim"),
    ("model.mlp_ratio=0", "ModelConfig.mlp_ratio"),
    ("model.drop_path=1.0", "ModelConfig.drop_path"),
    ("model.in_std=0", "ModelConfig.in_std"),
    ("model.qkv_bias=0", "ModelConfig.qkv_bias"),
    ("model.img_size='64'", "ModelConfig.img_size"),
    ("masks.n_targets=0", "MaskConfig.n_targets"),
    ("masks.min_keep=0", "MaskConfig.min_keep"),
    ("masks.pred_scale=(0.2, 0.1)", "MaskConfig.pred_scale"),
    ("masks.enc_scale=(0.85, 1.5)", "MaskConfig.enc_scale"),
    ("masks.pred_aspect=(0, 1.5)", "MaskConfig.pred_aspect"),
    ("masks.per_sample='true'", "MaskConfig.per_sample"),
    ("masks.max_tries=0", "MaskConfig.max_tries"),
]


# ----------------------------------------------------------------------------- manifests

# (name, file content, label_cols, error regex or None (must load), label columns expected).
# The tests write a.png and b.png beside each manifest; every error must name the manifest.
MANIFEST_CASES: list[tuple[str, str | bytes, list[str] | None, str | None, list[str]]] = [
    ("yes-no", "path,effusion\na.png,yes\nb.png,no\n", None,
     r"column 'effusion', line 2: label 'yes' is not one of .*Write yes/true/positive as 1", []),
    ("true-false", "path,effusion\na.png,True\nb.png,False\n", None,
     r"column 'effusion', line 2: label 'True'", []),
    ("typo", "path,effusion\na.png,1\nb.png,0\na.png,1\nb.png,1O\na.png,0\n", None,
     r"column 'effusion', line 5: label '1O'", []),
    ("explicit-yes", "path,effusion\na.png,1\nb.png,Yes\n", ["effusion"],
     r"column 'effusion', line 3: label 'Yes'.*Write yes/true/positive as 1", []),
    ("bom", "\ufeffpath,effusion\na.png,1\nb.png,0\n", None, None, ["effusion"]),
    ("latin-1", "path,effusion,note\na.png,1,caf\u00e9\nb.png,0,ok\n".encode("latin-1"), None,
     r"not UTF-8 text .*save the manifest as UTF-8", []),
    ("nul-byte", "path,effusion\na.png,1\x00\nb.png,0\n", None, r"line 2 contains NUL bytes", []),
    ("metadata-columns", "path,effusion,age,report\na.png,1,45,left effusion\n"
     "b.png,0,0,normal\n", None, None, ["effusion"]),
    ("duplicate-header", "path,effusion,effusion\na.png,1,0\n", None,
     r"\['effusion'\] appear more than once", []),
    ("empty-path", "path,effusion\na.png,1\n,0\n", None, r"line 3: the 'path' cell is empty", []),
    ("multiline-cell", 'path,effusion,report\na.png,1,"two\nlines"\nb.png,0,x\na.png,maybe,y\n',
     None, r"line 5: label 'maybe'", []),  # the quoted cell spans lines 2-3
]
