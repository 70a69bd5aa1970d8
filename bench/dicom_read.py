"""DICOM read + preprocess rate of the kit vs plain ``pydicom.dcmread`` + resize, same run.

Run: ``OMP_NUM_THREADS=1 python bench/dicom_read.py [--size 224] [--repeat 5]``

Files: pydicom-data's real RG1_UNCR.dcm (1955 x 1841, 15-bit MONOCHROME1) and a few
SYNTHETIC phantoms written as 12-bit 1024 x 1024 DICOMs in a temporary folder.

- kit: ``read_dicom`` (Modality LUT, VOI window, MONOCHROME1 inversion, checks) +
  ``preprocess`` (aspect-preserving pad to a square, antialiased);
- baseline: ``pydicom.dcmread(f).pixel_array`` -> min-max to [0, 1] -> Pillow bilinear
  resize to a square (no LUTs, no inversion, aspect ratio not kept).

The ratio says what the kit's correctness costs. CPU time (``time.process_time``) is printed
next to wall time because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_phantom_dicoms(folder: Path, n: int) -> list[Path]:
    from radjepa_lab.data.dicom import write_dicom
    from radjepa_lab.data.phantom import PhantomConfig, generate_phantom

    return [
        write_dicom(folder / f"phantom_{i}.dcm",
                    np.round(generate_phantom(i, PhantomConfig(size=1024)).image * 4095),
                    bits_stored=12, window=(2048, 4096), PatientName="SYNTHETIC^PHANTOM",
                    ImageComments="SYNTHETIC")
        for i in range(n)
    ]


def timed(fn, files: list[Path], repeat: int) -> tuple[float, float]:
    fn(files[0])  # warm-up (imports, caches)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for f in files:
            fn(f)
    n = repeat * len(files)
    return n / (time.perf_counter() - w0), n / max(time.process_time() - c0, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--phantoms", type=int, default=3)
    args = ap.parse_args()

    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file

    from radjepa_lab.data.dicom import read_dicom
    from radjepa_lab.data.transforms import preprocess

    def kit(f: Path) -> np.ndarray:
        return preprocess(read_dicom(f)[0], args.size)

    def plain(f: Path) -> np.ndarray:
        a = pydicom.dcmread(f).pixel_array.astype(np.float32)
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6)
        return np.asarray(Image.fromarray(a).resize((args.size, args.size), Image.BILINEAR))

    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, size {args.size}")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"RG1_UNCR.dcm (1955x1841, real)": [Path(get_testdata_file("RG1_UNCR.dcm"))],
                f"{args.phantoms} SYNTHETIC phantoms (1024x1024)":
                    write_phantom_dicoms(Path(tmp), args.phantoms)}
        for name, files in sets.items():
            k_wall, k_cpu = timed(kit, files, args.repeat)
            p_wall, p_cpu = timed(plain, files, args.repeat)
            print(f"{name}: kit {k_cpu:6.1f} img/s CPU ({k_wall:6.1f} wall) | plain pydicom+resize "
                  f"{p_cpu:6.1f} img/s CPU ({p_wall:6.1f} wall) | kit/plain = {k_cpu / p_cpu:.2f}")


if __name__ == "__main__":
    main()
