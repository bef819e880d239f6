"""Fuzzed uploads: mutated ``.keras`` zips and HDF5 files, random bytes under every accepted
suffix, malformed ``.npz`` files, damaged zips of image folders and CSV tables each load or end
in one ``InputError`` sentence, never a traceback, a hang or unbounded memory (the bounds are in
``optimizers.keras_io`` and ``optimizers.datasets``).

Seeded (the same inputs on every run), at least 500 inputs, under a minute on two cores.
"""

from __future__ import annotations

import faulthandler
import io
import json
import random
import re
import resource
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from optimizers import cli, keras_io  # noqa: E402
from optimizers.keras_io import InputError  # noqa: E402
from ui import services  # noqa: E402

SEED = 13
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")
HANG_SECONDS = 60  # one input taking this long kills the run with a stack dump
MAX_SECONDS_PER_INPUT = 10
MAX_RSS_GROWTH = 1024**3  # the whole fuzz run may raise the process's peak memory by 1 GB


def build(units: int, name: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(units, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="classes"),
        ],
        name=name,
    )


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("fuzz")
    files = {}
    for key, model in (("model", build(16, "fuzz_small")), ("other", build(32, "fuzz_other"))):
        for suffix in ("keras", "h5"):
            path = out / f"{key}.{suffix}"
            model.save(path)
            files[f"{key}.{suffix}"] = path.read_bytes()
    return files


def npz(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def rezip(entries: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compress) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def flip(rng: random.Random, data: bytes, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def mutate_json(rng: random.Random, value: object) -> object:
    """One random change deep inside a config: a number scaled or negated, a string swapped,
    a key dropped."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        if rng.random() < 0.15:
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: mutate_json(rng, value[key])}
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        return [*value[:i], mutate_json(rng, value[i]), *value[i + 1 :]]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return rng.choice([0, -1, value * 1000, 10**12, 2**40, float("nan"), None, "8"])
    if isinstance(value, str):
        return rng.choice(["", "Lambda", "relu", "float64", "../x", value[::-1], "os.system"])
    return rng.choice([None, 1, "x", [], {}])


def keras_inputs(rng: random.Random, bases: dict[str, bytes], n: int) -> Iterator[tuple]:
    with zipfile.ZipFile(io.BytesIO(bases["model.keras"])) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(io.BytesIO(bases["other.keras"])) as z:
        other = {name: z.read(name) for name in z.namelist()}
    config = json.loads(entries["config.json"])
    for i in range(n):
        kind = i % 9
        e = dict(entries)
        if kind == 0:  # an entry removed
            del e[rng.choice(sorted(e))]
        elif kind == 1:  # an entry renamed
            name = rng.choice(sorted(e))
            e[rng.choice(["config.JSON", "model.weights.h5.bak", "../" + name, name + "/"])] = (
                e.pop(name)
            )
        elif kind == 2:  # the archive truncated
            data = bases["model.keras"]
            yield "truncated", "model.keras", data[: rng.randrange(1, len(data))]
            continue
        elif kind == 3:  # config.json altered
            for _ in range(rng.randint(1, 3)):
                config_i = mutate_json(rng, config)
            e["config.json"] = json.dumps(config_i).encode()
        elif kind == 4:  # config.json of another model, or its weights of the wrong shape
            key = rng.choice(["config.json", "model.weights.h5"])
            e[key] = other[key]
        elif kind == 5:  # a nested zip in place of an entry, or the whole archive zipped again
            if rng.random() < 0.5:
                yield "nested", "model.keras", rezip({"model.keras": bases["model.keras"]})
                continue
            e[rng.choice(sorted(e))] = bases["model.keras"]
        elif kind == 6:  # bytes flipped inside the weights
            e["model.weights.h5"] = flip(rng, e["model.weights.h5"], rng.randint(1, 40))
        elif kind == 7:  # an entry's bytes cut short inside a well-formed zip
            name = rng.choice(sorted(e))
            e[name] = e[name][: rng.randrange(len(e[name]) + 1)]
        else:  # config.json not JSON, or JSON of the wrong kind
            e["config.json"] = rng.choice([b"{", b"[]", b"null", b'"model"', b"\xff\xfe", b"1e999"])
        yield (
            f"zip-{kind}",
            "model.keras",
            rezip(e, rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
        )


def h5_inputs(rng: random.Random, bases: dict[str, bytes], n: int) -> Iterator[tuple]:
    for i in range(n):
        data = bases[rng.choice(["model.h5", "other.h5"])]
        if i % 3 == 0:
            yield "h5-truncated", "model.h5", data[: rng.randrange(8, len(data))]
        elif i % 3 == 1:
            yield "h5-flipped", "model.h5", flip(rng, data, rng.randint(1, 64))
        else:  # a run of bytes overwritten with zeros or 0xff
            start = rng.randrange(len(data))
            fill = bytes([rng.choice([0, 255])]) * rng.randint(1, 512)
            yield (
                "h5-overwritten",
                "model.hdf5",
                (data[:start] + fill + data[start + len(fill) :])[: len(data)],
            )


def random_inputs(rng: random.Random, n: int) -> Iterator[tuple]:
    suffixes = [*services.UPLOAD_SUFFIXES, *services.DATA_SUFFIXES]
    for i in range(n):
        prefix = rng.choice(
            [b"", b"PK\x03\x04", keras_io.HDF5_SIGNATURE, b"\x93NUMPY", b"\x80\x04"]
        )
        data = prefix + rng.randbytes(rng.randint(0, 4096))
        yield "random", f"random{suffixes[i % len(suffixes)]}", data


def huge_npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def npz_inputs(rng: random.Random, n: int) -> Iterator[tuple]:
    x = rng_array = np.random.default_rng(SEED).random((6, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 5])
    objects = np.empty(6, dtype=object)
    objects[:] = [{"i": i} for i in range(6)]
    makers: list[Callable[[], bytes]] = [
        lambda: npz(X=x, y=y),
        lambda: npz(inputs=x),
        lambda: npz(x=x.astype(rng.choice(["U1", "bool", "complex64", "datetime64[s]"])), y=y),
        lambda: npz(x=x.reshape(6, 64), y=y),
        lambda: npz(x=x[0], y=y),
        lambda: npz(x=x[:0]),
        lambda: npz(x=np.where(rng_array > 0.5, rng.choice([np.nan, np.inf, -np.inf]), x), y=y),
        lambda: npz(x=x.astype(np.float64) * 1e300, y=y),
        lambda: npz(x=objects, y=y),
        lambda: npz(x=x, y=objects),
        lambda: npz(x=x, y=rng.choice([y[:3], y + 20, y - 9, y + 0.5, np.array(list("abcdef"))])),
        lambda: npz(x=x, y=np.int64(3)),
        lambda: npz(x=x, y=np.ones((6, 10))),
        lambda: rezip({"x.npy": huge_npy_header(rng.choice([(10**12, 8, 8, 1), (2**31, 64)]))}),
        lambda: rezip({"x.npy": huge_npy_header((6, 8, 8, 1), "|O")}),
        lambda: rezip({"x.npy": bytes(2 * 1024**2)}, zipfile.ZIP_DEFLATED),
        lambda: flip(rng, npz(x=x, y=y), rng.randint(1, 30)),
        lambda: npz(x=x, y=y)[: rng.randrange(1, 2000)],
        lambda: huge_npy_header((6, 8, 8, 1)) + x.tobytes(),
    ]
    for i in range(n):
        yield f"npz-{i % len(makers)}", "data.npz", makers[i % len(makers)]()


def png_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def image_zip_inputs(rng: random.Random, n: int) -> Iterator[tuple]:
    """Zips of image class folders (``datasets``), each damaged in one way."""
    pixels = np.random.default_rng(SEED).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    entries = {f"set/{i % 3}/{i}.png": png_bytes(p) for i, p in enumerate(pixels)}
    whole = rezip(entries)
    makers: list[Callable[[], bytes]] = [
        lambda: rezip({**entries, "set/1/1.png": flip(rng, entries["set/1/1.png"], 8)}),
        lambda: rezip({**entries, "set/2/2.png": entries["set/2/2.png"][: rng.randrange(60)]}),
        lambda: whole[: rng.randrange(1, len(whole))],
        lambda: flip(rng, whole, rng.randint(1, 20)),
        lambda: rezip({**entries, "set/0/x.jpg": rng.randbytes(rng.randint(0, 300))}),
        lambda: rezip({**entries, "stray.png": entries["set/0/0.png"]}),
        lambda: rezip(
            {f"{i}/a.gif": png_bytes(pixels[0], "GIF") for i in range(rng.choice([2, 12]))}
        ),
        lambda: rezip({"a/1.png": png_bytes(pixels[0].astype(np.uint16) * 200)}),
        lambda: rezip({"a/1.bmp": png_bytes(np.zeros((3000, 9000), np.uint8), "BMP")[:4096]}),
        lambda: rezip({"../up/1.png": entries["set/0/0.png"], "x/2.png": b"\x89PNG\r\n\x1a\n"}),
        lambda: rezip({"readme.txt": b"images elsewhere", "empty/": b""}),
        lambda: rezip({"set.zip": whole}),
        lambda: rezip(
            {**entries, "set/0/1.jpeg": png_bytes(np.zeros((8, 8, 3), np.uint8), "JPEG")}
        ),
        lambda: rezip({**entries, "set/3/big.png": png_bytes(np.zeros((400, 2), np.uint8))}),
    ]
    for i in range(n):
        yield f"images-{i % len(makers)}", "images.zip", makers[i % len(makers)]()


def csv_inputs(rng: random.Random, n: int) -> Iterator[tuple]:
    """CSV tables for the 8x8 fuzz model (64 feature columns and a label), each damaged."""
    values = np.random.default_rng(SEED).random((5, 64)).round(3)
    header = ",".join([*(f"p{i}" for i in range(64)), "label"])
    rows = [",".join([*map(str, row), str(i)]) for i, row in enumerate(values)]
    whole = "\n".join([header, *rows]) + "\n"

    def row_changed(change: Callable[[list[str]], list[str]]) -> bytes:
        lines = whole.splitlines()
        at = rng.randrange(1, len(lines))
        lines[at] = ",".join(change(lines[at].split(",")))
        return ("\n".join(lines) + "\n").encode()

    makers: list[Callable[[], bytes]] = [
        lambda: flip(rng, whole.encode(), rng.randint(1, 20)),
        lambda: whole.encode()[: rng.randrange(1, len(whole))],
        lambda: row_changed(lambda cells: cells[: rng.randrange(len(cells))]),
        lambda: row_changed(lambda cells: [*cells, "9"]),
        lambda: row_changed(
            lambda cells: [rng.choice(["", "x", "1e999", "nan", '"', "--1"]), *cells[1:]]
        ),
        lambda: row_changed(
            lambda cells: [*cells[:-1], rng.choice(["cat", "-1", "99", "0.5", ""])]
        ),
        lambda: "\n".join(rows).encode(),
        lambda: whole.replace("label", rng.choice(["y", "p0", ""]), 1).encode(),
        lambda: (header + ",target\n" + "\n".join(r + ",1" for r in rows)).encode(),
        lambda: whole.encode("utf-16"),
        lambda: ('"' + "a" * 200_000 + '"\n').encode(),
        lambda: header.encode() + b"\n" + b"\x00" * rng.randint(1, 100),
        lambda: rng.randbytes(rng.randint(0, 500)),
    ]
    for i in range(n):
        yield f"csv-{i % len(makers)}", "table.csv", makers[i % len(makers)]()


def assert_one_sentence(message: str, label: str) -> None:
    assert message and "\n" not in message, (label, message)
    assert "Traceback" not in message and not SENTENCE_BREAK.search(message), (label, message)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def test_fuzzed_uploads_load_or_are_refused_in_one_sentence(bases, monkeypatch) -> None:
    # A damaged HDF5 file can hang the HDF5 library; the child process reading it is stopped
    # after HDF5_SECONDS. These files are a few kB, so 2 s is ample and keeps the run short.
    monkeypatch.setattr(keras_io, "HDF5_SECONDS", 2)
    rng = random.Random(SEED)
    model = services.open_upload("model.keras", bases["model.keras"])
    inputs = [
        *keras_inputs(rng, bases, 150),
        *h5_inputs(rng, bases, 60),
        *random_inputs(rng, 60),
        *npz_inputs(rng, 152),
        *image_zip_inputs(rng, 56),
        *csv_inputs(rng, 52),
    ]
    assert len(inputs) >= 500
    counts: dict[str, int] = {"loaded": 0, "refused": 0}
    slowest, rss_before, started = 0.0, peak_rss(), time.monotonic()
    examples: dict[str, str] = {}
    for label, name, data in inputs:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        t0 = time.monotonic()
        try:
            if name.endswith(services.DATA_SUFFIXES):
                services.with_data(model, name, data)
            else:
                services.open_upload(name, data)
            counts["loaded"] += 1
        except InputError as e:
            assert_one_sentence(str(e), label)
            counts["refused"] += 1
            examples.setdefault(label, str(e))
        finally:
            faulthandler.cancel_dump_traceback_later()
        slowest = max(slowest, time.monotonic() - t0)
    elapsed, growth = time.monotonic() - started, peak_rss() - rss_before
    print(
        f"\nfuzz: {len(inputs)} inputs in {elapsed:.1f} s, {counts}, slowest {slowest:.2f} s, "
        f"peak RSS +{growth / 1e6:.0f} MB"
    )
    for label, message in sorted(examples.items()):
        print(f"  {label}: {message}")
    assert slowest < MAX_SECONDS_PER_INPUT
    assert growth < MAX_RSS_GROWTH
    assert counts["refused"] > len(inputs) * 0.8  # the mutations really are mostly broken


def test_zip_bomb_and_huge_declared_arrays_are_refused_before_reading(tmp_path: Path) -> None:
    # Deflated zeros: 2 MB on disk, 2 GiB + 1 MB once unpacked.
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            chunk = bytes(64 * 1024**2)
            for _ in range(33):
                f.write(chunk)
    model = build(16, "bomb_target")
    before = peak_rss()
    with pytest.raises(InputError, match=r"bomb.npz would unpack to 2.1 GB, over the 2 GB limit"):
        keras_io.load_data(bomb, model)
    huge = tmp_path / "huge.npz"
    huge.write_bytes(rezip({"x.npy": huge_npy_header((10**12, 8, 8, 1))}))
    with pytest.raises(InputError, match=r"array x declares 256,000,000.0 MB of data but holds"):
        keras_io.load_data(huge, model)
    assert peak_rss() - before < 200 * 1024**2


def test_a_config_that_declares_huge_weights_is_refused_before_they_are_allocated(
    tmp_path: Path, bases
) -> None:
    with zipfile.ZipFile(io.BytesIO(bases["model.keras"])) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    config = entries["config.json"].decode().replace('"units": 16', '"units": 1000000000')
    path = tmp_path / "huge.keras"
    path.write_bytes(rezip({**entries, "config.json": config.encode()}))
    before = peak_rss()
    with pytest.raises(
        InputError, match=r"huge.keras declares 580,000 MB of weights but holds only 0.0 MB"
    ):
        keras_io.load_model(path)
    assert peak_rss() - before < 200 * 1024**2


@pytest.mark.parametrize(
    ("kind", "index"), [("zip", 2), ("zip", 6), ("zip", 8), ("npz", 0), ("npz", 8), ("npz", 13)]
)
def test_the_cli_refuses_fuzzed_files_with_one_error_line(
    tmp_path, bases, capsys, kind, index
) -> None:
    rng = random.Random(SEED)
    inputs = list(keras_inputs(rng, bases, 9) if kind == "zip" else npz_inputs(rng, 19))
    label, name, data = inputs[index]
    path = tmp_path / name
    path.write_bytes(data)
    args = ["apply", str(path)]
    if name.endswith(".npz"):
        model = tmp_path / "model.keras"
        model.write_bytes(bases["model.keras"])
        args = ["apply", str(model), "--data", str(path)]
    assert cli.main(args) == 2, label
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, (label, err)
    assert_one_sentence(err.strip(), label)
