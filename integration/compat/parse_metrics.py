"""Parses OpenMetrics text (the emulator's /metrics) from standard input with the official
Prometheus Python client's parser, and prints every sample as JSON lines:
{"family", "type", "name", "labels", "value"}. A text the parser refuses exits non-zero.
Run by emulator/tests/metrics.rs.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "name": sample.name,
            "labels": sample.labels,
            "value": sample.value,
        }))
