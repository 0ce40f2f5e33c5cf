"""The README's Paper-versus-this-world table is built from a results directory."""

from __future__ import annotations

import csv

import pytest

from agents.experiments.benchmark import RESULT_COLUMNS
from agents.experiments.paper_table import table


def write(tmp_path, rows):
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in RESULT_COLUMNS})


def row(agent, cell, cpu, cloud, weak_cloud="nan"):
    return {"agent": agent, "device": "mi8pro", "scenario": cell, "setting": "static", "seed": 0,
            "ppw_vs_cpu": cpu, "ppw_vs_cloud": cloud, "ppw_vs_cpu_regular": cpu,
            "ppw_vs_cloud_regular": cloud, "ppw_vs_cpu_weak": "nan", "ppw_vs_cloud_weak": weak_cloud,
            "oracle_match": 1.0, "near_optimal_rate": 0.9, "oracle_match_ceiling": 0.8}


def test_ratios_are_geometric_means_with_the_arithmetic_beside(tmp_path):
    write(tmp_path, [row("oracle", "non_streaming", 2.0, 1.0, 4.0),
                     row("oracle", "translation", 8.0, 4.0)])
    text = table(tmp_path)
    line = next(l for l in text.splitlines() if l.startswith("| oracle"))
    assert "| 4.00x (5.00) | 2.00x (2.50) |" in line   # sqrt(2*8), sqrt(1*4)
    assert "| 2.00 / 4.00 |" in line                    # weak: the one cell that has weak requests
    assert "| 100.0 | 90.0 | 80.0 |" in line
    assert "| paper (abstract; 97.9 % from the press summary) | 9.8x | 1.6x |" in text
    assert "2 cells x 1 seeds" in text


def test_an_empty_directory_is_refused(tmp_path):
    write(tmp_path, [])
    with pytest.raises(ValueError, match="no results"):
        table(tmp_path)
