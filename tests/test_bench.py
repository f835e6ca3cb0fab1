"""The bench's quick round (bench/, ``make bench-quick``) runs end to end and every section
comes out with figures that make sense. No thresholds: speed is judged from the bench's
ratios, never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from bench.__main__ import main
from bench.tasks import buckets, task_figures
from bench.tools import db_cost


def _ordered(p: dict[str, float]) -> bool:
    return p["n"] > 0 and 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]


def test_the_quick_round_measures_every_section(tmp_path: Path) -> None:
    path = main(["--quick", "--results", str(tmp_path)])
    assert path.parent == tmp_path
    results = json.loads(path.read_text())
    assert results["machine"]["cores"] > 0 and results["machine"]["temporal_cli"]

    throughput = results["throughput"]
    for kind in ("baseline_remote", "baseline_local", "refunds_client", "refunds_http"):
        figures = throughput[kind]
        assert figures["workflows"] > 0 and figures["per_s"] > 0, kind
        assert figures["stuck"] == 0, kind
        cpu = figures["cpu_s_per_workflow"]
        runner = "baseline" if kind.startswith("baseline") else "worker"
        assert cpu[runner] > 0 and cpu["temporal"] > 0, kind
        assert _ordered(figures["start_to_end"]) and _ordered(figures["start_call"]), kind
    assert throughput["ratios"] and all(v > 0 for v in throughput["ratios"].values())

    overhead = results["api_overhead"]
    assert _ordered(overhead["post_refunds"]) and _ordered(overhead["start_workflow"])
    assert overhead["p50_ratio"] > 0 and overhead["p99_ratio"] > 0

    tasks = results["workflow_tasks"]
    assert tasks["tasks"] > 0 and 0 <= tasks["over_200ms"] <= tasks["tasks"]
    assert tasks["buckets"]["+Inf"] == tasks["tasks"]
    activations = tasks["activation_cpu"]  # at least one per task
    assert activations["tasks"] >= tasks["tasks"] and activations["buckets"]["1"] >= 0

    history = results["history"]
    assert history["events"] > 0 and history["bytes"] > 0
    assert sum(t["events"] for t in history["by_type"].values()) == history["events"]

    scale = results["scale"]
    assert scale["open"] > 0 and scale["opened_per_s"] > 0 and scale["settle_s"] >= 0
    assert scale["cpu_s_per_refund_open"]["worker"] > 0
    assert scale["cpu_s_per_refund_empty"]["worker"] > 0
    for process in ("worker", "temporal", "api"):
        assert scale["rss_mb_open"][process] > 0
    for latency in ("get_refund", "post_refunds", "approval"):
        assert _ordered(scale[latency]), latency
    assert scale["open_vs_empty"] > 0
    inbox = scale["inbox"]
    assert inbox["waiting"] == scale["open"] - results["options"]["approvals"]
    assert 0 < inbox["median_ms"] <= inbox["p90_ms"] and inbox["page_bytes"] > 0


def test_db_cost_runs_the_refunds_database_work(tmp_path: Path) -> None:
    """Each refund it measures is accepted, reserved and passes the second check (asserted
    inside), on a fresh database."""
    url = f"sqlite:///{tmp_path / 'refundflow.db'}"
    assert db_cost.main(["--refunds", "3", "--warmup", "1", "--url", url]) > 0


def test_workflow_task_buckets_add_up_over_label_sets() -> None:
    exposition = "\n".join(
        [
            "# TYPE temporal_workflow_task_execution_latency histogram",
            'temporal_workflow_task_execution_latency_bucket{workflow_type="A",le="100"} 3',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="A",le="200"} 4',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="A",le="500"} 6',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="A",le="+Inf"} 6',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="B",le="100"} 2',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="B",le="200"} 2',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="B",le="500"} 2',
            'temporal_workflow_task_execution_latency_bucket{workflow_type="B",le="+Inf"} 2',
            'temporal_workflow_task_execution_latency_sum{workflow_type="A"} 900',
        ]
    )
    figures = task_figures(buckets(exposition))
    assert figures["tasks"] == 8 and figures["over_200ms"] == 2
    assert figures["slowest_bucket_le_ms"] == 500
    assert buckets(exposition, "refundflow_workflow_activation_cpu") == {}


def test_results_go_to_a_folder_or_to_the_file_named(tmp_path: Path) -> None:
    results = {"commit": "abc1234", "figure": 1}
    in_folder = report.write(results, tmp_path / "runs")
    assert in_folder.parent == tmp_path / "runs" and in_folder.name.endswith("-abc1234.json")
    named = report.write(results, tmp_path / "more" / "open10000.json")
    assert named == tmp_path / "more" / "open10000.json" and named.is_file()
    assert json.loads(named.read_text()) == results
