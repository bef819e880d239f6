"""Reading the user's data: 10,000 28×28 PNG files in a zip of class folders, through
``datasets.read`` (decode, scale, check), against two floors measured in the same run: the
same pixels as an ``.npz`` (``datasets.read`` too) and merely unpacking every zip entry.

Run: ``python -m bench.data [--images 10000] [--repeats 3]``. Target: ≤ 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from bench.bench import median_seconds  # noqa: E402
from optimizers import datasets  # noqa: E402

SIDE, CLASSES = 28, 10
TARGET_SECONDS = 5.0


def images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 grayscale images (noise over a class-dependent bar, seeded) and labels."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % CLASSES
    pixels = rng.integers(0, 64, (n, SIDE, SIDE), dtype=np.uint8)
    for c in range(CLASSES):
        pixels[y == c, 2 * c : 2 * c + 4, :] = 255
    return pixels, y


def as_zip(pixels: np.ndarray, y: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i, (image, label) in enumerate(zip(pixels, y, strict=True)):
            png = io.BytesIO()
            Image.fromarray(image).save(png, "PNG")
            z.writestr(f"digits/{label}/{i:05d}.png", png.getvalue())
    return out.getvalue()


def as_npz(pixels: np.ndarray, y: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, x=(pixels[..., None] / 255.0).astype(np.float32), y=y)
    return out.getvalue()


def unpack(raw: bytes) -> int:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return sum(len(z.read(info)) for info in z.infolist())


def model():
    import keras

    return keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pixels, y = images(args.images)
    zipped, npz, net = as_zip(pixels, y), as_npz(pixels, y), model()
    read = datasets.read(zipped, net, "digits.zip")
    assert np.array_equal(read.y, y[np.argsort([f"{c}/{i:05d}" for i, c in enumerate(y)])])
    zip_s = median_seconds(lambda: datasets.read(zipped, net, "digits.zip"), args.repeats)
    npz_s = median_seconds(lambda: datasets.read(npz, net, "digits.npz"), args.repeats)
    unpack_s = median_seconds(lambda: unpack(zipped), args.repeats)
    row = {
        "images": args.images,
        "zip_mb": round(len(zipped) / 1e6, 2),
        "zip_s": round(zip_s, 3),
        "npz_s": round(npz_s, 3),
        "unpack_s": round(unpack_s, 3),
        "vs_npz": round(zip_s / npz_s, 1),
        "vs_unpack": round(zip_s / unpack_s, 1),
        "cores": os.cpu_count(),
        "target_s": TARGET_SECONDS,
        "met": zip_s <= TARGET_SECONDS,
    }
    print(json.dumps(row))
    print(
        f"| {args.images:,} {SIDE}×{SIDE} PNG in a {row['zip_mb']} MB zip | {zip_s:.2f} s "
        f"(≤ {TARGET_SECONDS:g} s: {'met' if row['met'] else 'MISSED'}) | {row['vs_npz']}× the "
        f".npz ({npz_s:.2f} s) | {row['vs_unpack']}× unpacking alone ({unpack_s:.2f} s) |"
    )


if __name__ == "__main__":
    main()
