"""{{name}}: a wasmscaler policy in Python. It starts as the Horizontal Pod Autoscaler's CPU
formula; make it yours.

`gather` emits one `cpu` sample per replica (usage in percent of its request, from the
`kubernetes-metrics` capability); `evaluate` applies desired = ceil(current x average /
target), holding the count while the ratio is within the tolerance.

Config: `targetUtilization` (percent, required), `tolerance` (default 0.1).
Build: `bash build.sh` (componentize-py); try: `bash test.sh`.
"""

import math
from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kubernetes_metrics
from wit_world.imports.types import (
    Context,
    Decision,
    Error_InvalidConfig,
    Error_Unavailable,
    Sample,
)


def config(ctx: Context, key: str) -> Optional[str]:
    for k, v in ctx.config:
        if k == key:
            return v
    return None


def number(ctx: Context, key: str, default: Optional[float]) -> float:
    text = config(ctx, key)
    if text is None:
        if default is None:
            raise Err(Error_InvalidConfig(f"{key} is required"))
        return default
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise Err(Error_InvalidConfig(f"{key} must be a non-negative number, got {text!r}"))
    return value


def show(value: float) -> str:
    """A float as Rust's Display writes it: 50.0 -> "50"."""
    return str(int(value)) if value.is_integer() else repr(value)


class Metrics(exports.Metrics):
    def gather(self, context: Context) -> List[Sample]:
        pods = {p.pod: p for p in kubernetes_metrics.pod_metrics()}
        samples = []
        for replica in context.replicas:
            pod = pods.get(replica.name)
            if pod is None:
                continue  # no metrics yet: the HPA leaves such pods out of the average too
            request = pod.cpu_request_millicores
            if not request:
                raise Err(Error_InvalidConfig(f"pod {pod.pod} has no CPU request"))
            samples.append(Sample("cpu", pod.cpu_millicores * 100.0 / request, pod.pod, []))
        return samples


class Evaluation(exports.Evaluation):
    def evaluate(self, context: Context, samples: List[Sample]) -> Decision:
        target = number(context, "targetUtilization", None)
        if target == 0:
            raise Err(Error_InvalidConfig("targetUtilization must be above 0"))
        tolerance = number(context, "tolerance", 0.1)
        values = [s.value for s in samples if s.name == "cpu"]
        if not values:
            raise Err(Error_Unavailable("no cpu samples"))
        average = sum(values) / len(values)
        current = context.target.current_replicas
        ratio = average / target
        if abs(ratio - 1.0) <= tolerance:
            desired = current
        else:
            desired = min(math.ceil(current * ratio), 2**32 - 1)
        reason = f"average cpu {average:.1f}% against target {show(target)}%: {current} -> {desired}"
        return Decision(desired, reason, None)
