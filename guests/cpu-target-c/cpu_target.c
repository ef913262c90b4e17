// The Horizontal Pod Autoscaler's CPU formula as a wasmscaler policy, in C.
//
// The same logic as guests/cpu-target (Rust): `gather` emits one `cpu` sample per replica
// (usage in percent of its request, from the `kubernetes-metrics` capability); `evaluate`
// applies desired = ceil(current x average / target), holding the count while the ratio is
// within the tolerance.
//
// Config: `targetUtilization` (percent, required), `tolerance` (default 0.1).
// Build: see build.sh (wit-bindgen c, clang for wasm32-wasi, wasm-tools component new).
// Every call runs in a fresh instance, so nothing here frees what it is given; what it
// returns must come from malloc, since the generated post-return code frees it.

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/cpu_target.h"

typedef wasmscaler_policy_types_context_t context_t;
typedef wasmscaler_policy_types_error_t error_t_;

static bool equals(const cpu_target_string_t *s, const char *text) {
  size_t n = strlen(text);
  return s->len == n && memcmp(s->ptr, text, n) == 0;
}

static bool fail(error_t_ *err, uint8_t tag, const char *message) {
  err->tag = tag;
  cpu_target_string_dup(&err->val.other, message);  // every case carries one string
  return false;
}

static const cpu_target_string_t *config(const context_t *ctx, const char *key) {
  for (size_t i = 0; i < ctx->config.len; i++) {
    if (equals(&ctx->config.ptr[i].f0, key)) return &ctx->config.ptr[i].f1;
  }
  return NULL;
}

// A non-negative finite number from `key`, `fallback` when absent (NAN: required).
static bool number(const context_t *ctx, const char *key, double fallback, double *out, error_t_ *err) {
  const cpu_target_string_t *text = config(ctx, key);
  char message[160];
  if (text == NULL) {
    if (isnan(fallback)) {
      snprintf(message, sizeof message, "%s is required", key);
      return fail(err, WASMSCALER_POLICY_TYPES_ERROR_INVALID_CONFIG, message);
    }
    *out = fallback;
    return true;
  }
  char buffer[64] = {0};
  size_t start = 0, end = text->len;
  while (start < end && isspace(text->ptr[start])) start++;
  while (end > start && isspace(text->ptr[end - 1])) end--;
  double value = NAN;
  if (end > start && end - start < sizeof buffer) {
    memcpy(buffer, text->ptr + start, end - start);
    char *rest = NULL;
    value = strtod(buffer, &rest);
    if (*rest != '\0') value = NAN;
  }
  if (!isfinite(value) || value < 0) {
    snprintf(message, sizeof message, "%s must be a non-negative number, got \"%.*s\"", key,
             (int)(text->len < 64 ? text->len : 64), (const char *)text->ptr);
    return fail(err, WASMSCALER_POLICY_TYPES_ERROR_INVALID_CONFIG, message);
  }
  *out = value;
  return true;
}

bool exports_wasmscaler_policy_metrics_gather(exports_wasmscaler_policy_metrics_context_t *ctx,
                                              exports_wasmscaler_policy_metrics_list_sample_t *ret,
                                              exports_wasmscaler_policy_metrics_error_t *err) {
  wasmscaler_policy_kubernetes_metrics_list_pod_usage_t pods;
  if (!wasmscaler_policy_kubernetes_metrics_pod_metrics(&pods, err)) {
    return false;  // the capability's error, passed on unchanged
  }
  ret->ptr = calloc(ctx->replicas.len ? ctx->replicas.len : 1, sizeof *ret->ptr);
  ret->len = 0;
  for (size_t r = 0; r < ctx->replicas.len; r++) {
    const cpu_target_string_t *name = &ctx->replicas.ptr[r].name;
    for (size_t p = 0; p < pods.len; p++) {
      const wasmscaler_policy_kubernetes_metrics_pod_usage_t *pod = &pods.ptr[p];
      if (pod->pod.len != name->len || memcmp(pod->pod.ptr, name->ptr, name->len) != 0) continue;
      if (!pod->cpu_request_millicores.is_some || pod->cpu_request_millicores.val == 0) {
        char message[160];
        snprintf(message, sizeof message, "pod %.*s has no CPU request", (int)pod->pod.len,
                 (const char *)pod->pod.ptr);
        return fail(err, WASMSCALER_POLICY_TYPES_ERROR_INVALID_CONFIG, message);
      }
      wasmscaler_policy_types_sample_t *sample = &ret->ptr[ret->len++];
      cpu_target_string_dup(&sample->name, "cpu");
      sample->value = (double)pod->cpu_millicores * 100.0 / (double)pod->cpu_request_millicores.val;
      sample->replica.is_some = true;
      cpu_target_string_dup_n(&sample->replica.val, (const char *)pod->pod.ptr, pod->pod.len);
      break;
    }
    // A replica without metrics is left out, as the HPA does.
  }
  return true;
}

// `value` as Rust's Display writes it: the shortest form that reads back the same (50, 12.5).
static void shortest(char *out, size_t size, double value) {
  for (int precision = 1; precision <= 17; precision++) {
    snprintf(out, size, "%.*g", precision, value);
    if (strtod(out, NULL) == value) return;
  }
}

bool exports_wasmscaler_policy_evaluation_evaluate(
    exports_wasmscaler_policy_evaluation_context_t *ctx,
    exports_wasmscaler_policy_evaluation_list_sample_t *samples,
    exports_wasmscaler_policy_evaluation_decision_t *ret,
    exports_wasmscaler_policy_evaluation_error_t *err) {
  double target, tolerance;
  if (!number(ctx, "targetUtilization", NAN, &target, err)) return false;
  if (target == 0) {
    return fail(err, WASMSCALER_POLICY_TYPES_ERROR_INVALID_CONFIG, "targetUtilization must be above 0");
  }
  if (!number(ctx, "tolerance", 0.1, &tolerance, err)) return false;
  double sum = 0;
  size_t count = 0;
  for (size_t i = 0; i < samples->len; i++) {
    if (equals(&samples->ptr[i].name, "cpu")) {
      sum += samples->ptr[i].value;
      count++;
    }
  }
  if (count == 0) return fail(err, WASMSCALER_POLICY_TYPES_ERROR_UNAVAILABLE, "no cpu samples");
  double average = sum / (double)count;
  uint32_t current = ctx->target.current_replicas;
  double ratio = average / target;
  uint32_t desired = current;
  if (fabs(ratio - 1.0) > tolerance) {
    double wanted = ceil((double)current * ratio);
    desired = wanted >= 4294967295.0 ? UINT32_MAX : (uint32_t)wanted;
  }
  char shown[32], reason[160];
  shortest(shown, sizeof shown, target);
  snprintf(reason, sizeof reason, "average cpu %.1f%% against target %s%%: %u -> %u", average,
           shown, current, desired);
  ret->target_replicas = desired;
  ret->reason.is_some = true;
  cpu_target_string_dup(&ret->reason.val, reason);
  ret->remove_first.is_some = false;
  return true;
}
