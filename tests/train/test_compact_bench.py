"""`digitserve bench train`'s comparison: ratios to the reference model, per-seed accuracy,
and the table it prints (no training here: the full runs are the benchmark itself)."""

from __future__ import annotations

import argparse

import pytest

from digitserve.bench.train_bench import configure, format_table, seed_list, summarise


def run(model: str, seed: int, accuracy: float, seconds: float, outside: float) -> dict[str, object]:
    return {"model": model, "seed": seed, "test_accuracy": accuracy, "fit_seconds": seconds,
            "parameters": 1000, "epochs_run": 15,
            "out_of_mnist": {"all": outside, "page": outside + 0.02, "paper": outside - 0.02}}


def test_summary_takes_ratios_against_the_reference_in_the_same_run() -> None:
    runs = [run("cnn", 42, 0.9968, 600.0, 0.90),
            run("compact", 42, 0.9962, 150.0, 0.91), run("compact", 7, 0.9966, 170.0, 0.93)]
    rows = {row["model"]: row for row in summarise(runs, {"cnn": 9_000_000, "compact": 2_000_000}, "cnn")}
    assert rows["cnn"]["mac_ratio"] == 1.0 and rows["cnn"]["wall_ratio"] == 1.0
    compact = rows["compact"]
    assert compact["seeds"] == [42, 7] and compact["test_accuracy"] == [0.9962, 0.9966]
    assert compact["mean_test_accuracy"] == pytest.approx(0.9964)
    assert compact["mac_ratio"] == pytest.approx(2 / 9)
    assert compact["wall_ratio"] == pytest.approx(160 / 600)
    assert compact["out_of_mnist"] == pytest.approx(0.92)

    table = format_table(list(rows.values()), "cnn")
    assert "99.62% 99.66%" in table and "0.267" in table and "92.0% (94.0%/90.0%)" in table


def test_without_the_reference_there_are_no_ratios() -> None:
    rows = summarise([run("compact", 1, 0.99, 10.0, 0.9)], {"compact": 5}, "cnn")
    assert rows[0]["mac_ratio"] is None and rows[0]["wall_ratio"] is None
    assert "compact" in format_table(rows, "cnn")


def test_options() -> None:
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--seeds", "42,7,1234", "--single-seed", "cnn", "--epochs", "1"])
    assert (args.seeds, args.single_seed, args.epochs) == ([42, 7, 1234], "cnn", 1)
    assert parser.parse_args(["--seed", "3"]).seeds == [3]  # the old spelling still works
    with pytest.raises(argparse.ArgumentTypeError):
        seed_list("4,two")
