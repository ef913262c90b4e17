#!/usr/bin/env python3
"""Lints and renders a Helm chart with the real Helm library (PyPI's helm-python-sdk, Helm's Go
SDK behind a C ABI; no helm binary), for the chart tests (tests/support/chart.rs).

Usage: render_chart.py CHART_DIR VALUES_JSON
Prints one JSON object: {"lint": <helm lint --strict report>, "manifests": {file: text}},
rendered as release "wasmscaler" in namespace "wasmscaler" with VALUES_JSON over the chart's
values. A chart Helm cannot load or render exits 1 with Helm's error on stderr.
"""
import json
import sys

import helm_python as helm


def main():
    chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
    lint = helm.lint(chart_dir, values, strict=True, namespace="wasmscaler")
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name="wasmscaler", namespace="wasmscaler", is_install=True)
    json.dump({"lint": lint, "manifests": manifests}, sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except helm.HelmError as error:
        print(f"helm: {error}", file=sys.stderr)
        sys.exit(1)
