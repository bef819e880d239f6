"""Figures said in words on the Download page: times in a unit that fits, size and speed ratios
as "× smaller"/"× faster"/"× slower" or "same" within the noise, and the one file to ship.

Hand-made ``Latency`` and ``Exported`` values: no model, no timing."""

from __future__ import annotations

import pytest

from optimizers import latency
from optimizers.delivery import Exported
from optimizers.latency import Latency
from ui import explain


def timed(median_us: float, spread_us: float = 0.1) -> Latency:
    """A latency of ``median_us`` microseconds whose middle half of runs is ± ``spread_us``."""
    ms = median_us / 1e3
    return Latency(
        median_ms=ms,
        q1_ms=ms - spread_us / 1e3,
        q3_ms=ms + spread_us / 1e3,
        p90_ms=ms + 2 * spread_us / 1e3,
        threads_ms=ms,
        threads=2,
        runs=100,
        activation_bytes=256,
    )


BASE = timed(43.4)  # the original model's float32 file


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "—"),
        (0.00314, "3.1 µs"),
        (0.031, "31 µs"),
        (0.4567, "457 µs"),
        (0.9997, "1.0 ms"),  # not "1000 µs"
        (4.2, "4.2 ms"),
        (19.465, "19 ms"),
        (250.0, "250 ms"),
        (1300.0, "1.3 s"),
        (12_000.0, "12 s"),
    ],
)
def test_times_read_in_the_unit_that_fits(ms: float | None, text: str) -> None:
    assert latency.format_time(ms) == text


@pytest.mark.parametrize(
    ("file", "words", "verdict"),
    [
        (timed(11.4), "3.8× faster", "faster"),
        (timed(164.9), "3.8× slower", "slower"),
        (timed(33.4, spread_us=10), "same speed", "same speed"),  # 1.3×, but the runs overlap
        (timed(42.0), "same speed", "same speed"),  # apart, but under SAME_WITHIN (3%)
        (timed(43.4), "same speed", "same speed"),
    ],
)
def test_speed_ratio_in_words_with_the_noise_as_same_speed(
    file: Latency, words: str, verdict: str
) -> None:
    assert latency.speed_verdict(file, BASE) == verdict
    assert latency.speed_words(file, BASE) == words


def test_speed_words_need_both_times() -> None:
    assert latency.speed_words(None, BASE) == latency.speed_words(BASE, None) == "—"


@pytest.mark.parametrize(
    ("before", "after", "words"),
    [
        (85_360, 18_100, "4.7× smaller"),
        (85_360, 113_800, "1.3× larger"),
        (85_360, 85_000, "same size"),
        (None, 18_100, "—"),
    ],
)
def test_size_ratio_in_words(before: int | None, after: int | None, words: str) -> None:
    assert explain.size_words(before, after) == words


def exported(
    fmt: str,
    kb: float,
    accuracy: float | None = None,
    agreement: float | None = None,
    speed: Latency | None = None,
) -> Exported:
    data = bytes(round(kb * 1000))
    base = None if speed is None else BASE
    return Exported(fmt, data, len(data) // 3, accuracy, accuracy, agreement, speed, base)


FILES = {  # the float model scores 98.1%
    "keras": exported("keras", 113.8, 0.981),
    "tflite-float32": exported("tflite-float32", 85.4, 0.981, speed=timed(43.4)),
    "tflite-int8": exported("tflite-int8", 29.6, 0.976, speed=timed(31.0)),
    "tflite-int4": exported("tflite-int4", 12.3, 0.976, speed=timed(43.0)),
    "tflite-int2": exported("tflite-int2", 6.0, 0.612, speed=timed(44.0)),
    "tflite-float16": "this model cannot be written in this format",
}


def test_recommends_the_smallest_file_within_budget_and_the_fastest() -> None:
    assert explain.recommended_format(FILES, 0.981) == "tflite-int4"
    assert explain.recommend_file(FILES, 0.981, "digits_cnn") == (
        "Ship digits_cnn_int4.tflite: the smallest file within 1 point of the float model's 98.1% "
        "(12.3 kB, 97.6%, same speed as the original); the fastest within budget is "
        "digits_cnn_int8.tflite (31 µs, 1.4× faster than the original)."
    )


def test_the_budget_is_a_parameter_and_its_edge_is_within() -> None:
    files = {**FILES, "tflite-int4": exported("tflite-int4", 12.3, 0.971, speed=timed(31.0))}
    assert explain.recommend_file(files, 0.981, "m") == (  # 97.1% is exactly 1 point below
        "Ship m_int4.tflite: the smallest file within 1 point of the float model's 98.1% "
        "(12.3 kB, 97.1%, 1.4× faster than the original)."  # also the fastest: said once
    )
    assert explain.recommended_format(files, 0.981, budget_points=0.5) == "tflite-int8"
    assert explain.recommend_file(files, 0.981, "m", budget_points=0.5).startswith(
        "Ship m_int8.tflite: the smallest file within 0.5 points of the float model's 98.1% "
    )


def test_when_no_file_is_within_budget_it_names_the_closest() -> None:
    assert explain.recommended_format(FILES, 0.995) == "tflite-float32"  # smaller than .keras
    assert explain.recommend_file(FILES, 0.995, "m") == (
        "No file is within 1 point of the float model's 99.5%: the closest is m_float32.tflite "
        "(85.4 kB, 98.1%, same speed as the original); try gentler settings."
    )


def test_without_labels_agreement_with_the_preview_stands_in() -> None:
    files = {
        "keras": exported("keras", 113.8, agreement=1.0),
        "tflite-int8": exported("tflite-int8", 29.6, agreement=0.992, speed=timed(31.0)),
        "tflite-int2": exported("tflite-int2", 6.0, agreement=0.70, speed=timed(44.0)),
    }
    assert explain.recommended_format(files, None) == "tflite-int8"
    assert explain.recommend_file(files, None, "m") == (
        "Ship m_int8.tflite: the smallest file within 1 point of full agreement with the preview "
        "(29.6 kB, agrees on 99.2%, 1.4× faster than the original); the data has no labels, so "
        "agreement with the preview stands in for accuracy."
    )


def test_without_data_the_smallest_file_that_runs() -> None:
    files = {
        "keras": exported("keras", 113.8),
        "tflite-int8": exported("tflite-int8", 29.6, speed=timed(31.0)),
        "tflite-int2": exported("tflite-int2", 6.0, speed=timed(164.9)),
        "tflite-float16": "this model cannot be written in this format",
    }
    assert explain.recommended_format(files, None) == "tflite-int2"
    assert explain.recommend_file(files, None, "m") == (
        "Ship m_int2.tflite: the smallest file (6.0 kB, 3.8× slower than the original); "
        "without evaluation data its accuracy is not checked."
    )


def test_nothing_written_nothing_recommended() -> None:
    files = {"tflite-int8": "no calibration data"}
    assert explain.recommended_format(files, 0.9) is None
    assert explain.recommend_file(files, 0.9, "m") == "No file could be written for this model."


def test_file_names_match_the_download_buttons() -> None:
    assert explain.file_name("digits_cnn", "keras") == "digits_cnn_optimized.keras"
    assert (
        explain.file_name("digits_cnn", "tflite-int8-dynamic") == "digits_cnn_int8-dynamic.tflite"
    )
