"""Every number a report shows is computed here, so benchmark scripts and the CLI agree."""

from prunekit.report.measure import (
    bert_like_inputs,
    count_params,
    interleaved_latency,
    measure_latency,
    model_device,
    sparsity_by_module,
    speedup,
    stage_record,
)
from prunekit.report.metrics import classification_metrics
from prunekit.report.render import (
    delta_summary,
    package_versions,
    print_stage_table,
    render_markdown,
    shorten_module_name,
    stage_table,
    write_report,
)

__all__ = [
    "bert_like_inputs",
    "classification_metrics",
    "count_params",
    "delta_summary",
    "interleaved_latency",
    "measure_latency",
    "model_device",
    "package_versions",
    "print_stage_table",
    "render_markdown",
    "shorten_module_name",
    "sparsity_by_module",
    "speedup",
    "stage_record",
    "stage_table",
    "write_report",
]
