// The Horizontal Pod Autoscaler's CPU formula as a wasmscaler policy, in JavaScript.
//
// The same logic as guests/cpu-target (Rust): `gather` emits one `cpu` sample per replica
// (usage in percent of its request, from the `kubernetes-metrics` capability); `evaluate`
// applies desired = ceil(current × average / target), holding the count while the ratio is
// within the tolerance.
//
// Config: `targetUtilization` (percent, required), `tolerance` (default 0.1).
// Build: see build.sh (componentize-js). WIT types map to JS as jco maps them: records are
// objects with camelCase fields, u64/s64 are BigInt, option<T> is T or undefined, and a
// `result` error is thrown as the error variant `{ tag, val }`.

import { podMetrics } from 'wasmscaler:policy/kubernetes-metrics@0.1.1';

function config(ctx, key) {
  const entry = ctx.config.find(([k]) => k === key);
  return entry === undefined ? undefined : entry[1];
}

function number(ctx, key, fallback) {
  const text = config(ctx, key);
  if (text === undefined) {
    if (fallback === undefined) throw { tag: 'invalid-config', val: `${key} is required` };
    return fallback;
  }
  const trimmed = text.trim();
  const value = /^[0-9]*\.?[0-9]+$|^[0-9]+\.$/.test(trimmed) ? Number(trimmed) : NaN;
  if (!(Number.isFinite(value) && value >= 0)) {
    throw { tag: 'invalid-config', val: `${key} must be a non-negative number, got ${JSON.stringify(text)}` };
  }
  return value;
}

export const metrics = {
  gather(ctx) {
    let pods;
    try {
      pods = podMetrics();
    } catch (e) {
      throw e.payload ?? e; // the capability's error, passed on unchanged
    }
    const samples = [];
    for (const replica of ctx.replicas) {
      const pod = pods.find((p) => p.pod === replica.name);
      if (pod === undefined) continue; // no metrics yet: the HPA leaves such pods out too
      const request = pod.cpuRequestMillicores;
      if (request === undefined || request === 0n) {
        throw { tag: 'invalid-config', val: `pod ${pod.pod} has no CPU request` };
      }
      samples.push({
        name: 'cpu',
        value: (Number(pod.cpuMillicores) * 100) / Number(request),
        replica: pod.pod,
        labels: [],
      });
    }
    return samples;
  },
};

export const evaluation = {
  evaluate(ctx, samples) {
    const target = number(ctx, 'targetUtilization', undefined);
    if (target === 0) throw { tag: 'invalid-config', val: 'targetUtilization must be above 0' };
    const tolerance = number(ctx, 'tolerance', 0.1);
    const values = samples.filter((s) => s.name === 'cpu').map((s) => s.value);
    if (values.length === 0) throw { tag: 'unavailable', val: 'no cpu samples' };
    let sum = 0;
    for (const v of values) sum += v;
    const average = sum / values.length;
    const current = ctx.target.currentReplicas;
    const ratio = average / target;
    const desired =
      Math.abs(ratio - 1) <= tolerance ? current : Math.min(Math.ceil(current * ratio), 4294967295);
    return {
      targetReplicas: desired,
      reason: `average cpu ${average.toFixed(1)}% against target ${target}%: ${current} -> ${desired}`,
      removeFirst: undefined,
    };
  },
};
