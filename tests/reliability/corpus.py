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
    return cases


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
