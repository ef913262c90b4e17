;; The cpu-target policy as a hand-written WebAssembly component: the smallest guest, and a
;; readable reference of the canonical ABI. It implements wasmscaler's `policy` world with the
;; one capability it uses (kubernetes-metrics) and decides as guests/cpu-target (Rust) does,
;; except that its decision carries no reason string.
;;
;; Structure: the contract's types are imported (wasmscaler:policy/types@0.1.0) and named; a
;; core module `$Memory` owns the linear memory and the allocator; the host's `pod-metrics` is
;; lowered against that memory; the core module `$Main` holds the logic; `gather` and
;; `evaluate` are lifted and exported as the `metrics` and `evaluation` interfaces.
;;
;; Memory layouts (canonical ABI, wasmscaler:policy@0.1.0):
;;   context        size 96 align 8: autoscaler-name @0/@4, autoscaler-namespace @8/@12,
;;                  run-type u8 @16, now-ms s64 @24, target @32 (kind @32/@36, name @40/@44,
;;                  namespace @48/@52, current-replicas @56, min @60, max @64,
;;                  object-json @68/@72), replicas list @76/@80, config list @84/@88
;;   replica        size 56: name @0/@4, ready @8, start-time-ms option<s64> @16/@24,
;;                  labels @32/@36, address option<string> @40/@44/@48
;;   tuple<string,string>  size 16: key @0/@4, value @8/@12
;;   pod-usage      size 64: pod @0/@4, cpu-millicores u64 @8, memory-bytes u64 @16,
;;                  cpu-request option<u64> tag @24 value @32, memory-request @40/@48,
;;                  timestamp-ms s64 @56
;;   sample         size 40: name @0/@4, value f64 @8, replica option<string> @16/@20/@24,
;;                  labels @28/@32
;;   result<list<T>, error>  size 16: tag u8 @0; ok: list @4/@8; err: error @4
;;   error          size 12: case u8 @0 (0 invalid-config, 1 unavailable, 2 denied,
;;                  3 other), message string @4/@8
;;   result<decision, error> size 32: tag @0; ok: target-replicas @4, reason option @8/@12/@16,
;;                  remove-first option @20/@24/@28
(component
  ;; ---------------------------------------------------------------- the contract's types
  (type $types-type (instance
    (type $error (variant (case "invalid-config" string) (case "unavailable" string)
                          (case "denied" string) (case "other" string)))
    (export "error" (type (eq $error)))
    (type $run-type (enum "scaler" "dry-run" "api"))
    (export "run-type" (type $run-type' (eq $run-type)))
    (type $target (record (field "kind" string) (field "name" string) (field "namespace" string)
                          (field "current-replicas" u32) (field "min-replicas" u32)
                          (field "max-replicas" u32) (field "object-json" string)))
    (export "target" (type $target' (eq $target)))
    (type $pairs (list (tuple string string)))
    (type $replica (record (field "name" string) (field "ready" bool)
                           (field "start-time-ms" (option s64)) (field "labels" $pairs)
                           (field "address" (option string))))
    (export "replica" (type $replica' (eq $replica)))
    (type $context (record (field "autoscaler-name" string) (field "autoscaler-namespace" string)
                           (field "run-type" $run-type') (field "now-ms" s64)
                           (field "target" $target') (field "replicas" (list $replica'))
                           (field "config" $pairs)))
    (export "context" (type (eq $context)))
    (type $sample (record (field "name" string) (field "value" f64)
                          (field "replica" (option string)) (field "labels" $pairs)))
    (export "sample" (type (eq $sample)))
    (type $decision (record (field "target-replicas" u32) (field "reason" (option string))
                            (field "remove-first" (option (list string)))))
    (export "decision" (type (eq $decision)))
  ))
  (import "wasmscaler:policy/types@0.1.0" (instance $types (type $types-type)))
  (alias export $types "error" (type $error))
  (alias export $types "context" (type $context))
  (alias export $types "sample" (type $sample))
  (alias export $types "decision" (type $decision))

  ;; ---------------------------------------------------------------- the capability
  (import "wasmscaler:policy/kubernetes-metrics@0.1.0" (instance $kubernetes-metrics
    (type $pod-usage (record (field "pod" string) (field "cpu-millicores" u64)
                             (field "memory-bytes" u64) (field "cpu-request-millicores" (option u64))
                             (field "memory-request-bytes" (option u64)) (field "timestamp-ms" s64)))
    (export "pod-usage" (type $pod-usage' (eq $pod-usage)))
    (alias outer 1 $error (type $error'))
    (export "error" (type $error'' (eq $error')))
    (export "pod-metrics" (func (result (result (list $pod-usage') (error $error'')))))
  ))

  ;; ---------------------------------------------------------------- memory and allocator
  (core module $Memory
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    ;; A bump allocator: every call runs in a fresh instance, so nothing is ever freed.
    (func $alloc (export "alloc") (param $size i32) (param $align i32) (result i32)
      (local $ptr i32) (local $end i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.shr_u
                    (i32.add (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                             (i32.const 65535))
                    (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $heap (local.get $end))
      (local.get $ptr))

    ;; The canonical ABI's allocator: the host calls it to pass strings and lists in.
    (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $new i32)
      (local.set $new (call $alloc (local.get $size) (local.get $align)))
      (if (local.get $old)
        (then (memory.copy (local.get $new) (local.get $old) (local.get $old_size))))
      (local.get $new))
  )
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "memory" (core memory $mem))
  (alias core export $memory "cabi_realloc" (core func $realloc))

  ;; pod-metrics, lowered: the core function takes the address where the host writes the
  ;; result<list<pod-usage>, error> (allocating the list and strings with $realloc).
  (core func $pod-metrics (canon lower (func $kubernetes-metrics "pod-metrics")
                                       (memory $mem) (realloc $realloc)))

  ;; ---------------------------------------------------------------- the logic
  (core module $Main
      (import "host" "pod-metrics" (func $pod_metrics (param i32)))
      (import "memory" "memory" (memory 1))
      (import "memory" "alloc" (func $alloc (param i32 i32) (result i32)))

    (data (i32.const 16) "cpu")
    (data (i32.const 32) "targetUtilization")
    (data (i32.const 64) "tolerance")
    (data (i32.const 128) "targetUtilization is required")
    (data (i32.const 192) "targetUtilization must be a non-negative number")
    (data (i32.const 256) "targetUtilization must be above 0")
    (data (i32.const 320) "tolerance must be a non-negative number")
    (data (i32.const 384) "no cpu samples")
    (data (i32.const 416) "a pod has no CPU request")

    (func $streq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
      (local $i i32)
      (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
          (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                      (i32.load8_u (i32.add (local.get $b) (local.get $i))))
            (then (return (i32.const 0))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (i32.const 1))

    ;; The address of the (key, value) tuple for `key` in the context's config, or 0.
    (func $config (param $ctx i32) (param $key i32) (param $keylen i32) (result i32)
      (local $entry i32) (local $end i32)
      (local.set $entry (i32.load offset=84 (local.get $ctx)))
      (local.set $end (i32.add (local.get $entry) (i32.mul (i32.load offset=88 (local.get $ctx)) (i32.const 16))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $entry) (local.get $end)))
          (if (call $streq (i32.load (local.get $entry)) (i32.load offset=4 (local.get $entry))
                           (local.get $key) (local.get $keylen))
            (then (return (local.get $entry))))
          (local.set $entry (i32.add (local.get $entry) (i32.const 16)))
          (br $next)))
      (i32.const 0))

    ;; Parses a decimal such as `50`, ` 0.25 `: digits with at most one point, surrounding spaces
    ;; allowed. Anything else gives NaN.
    (func $number (param $ptr i32) (param $len i32) (result f64)
      (local $end i32) (local $c i32) (local $value f64) (local $scale f64) (local $point i32) (local $digits i32)
      (local.set $end (i32.add (local.get $ptr) (local.get $len)))
      (local.set $scale (f64.const 1))
      (block $trimmed_start
        (loop $skip
          (br_if $trimmed_start (i32.ge_u (local.get $ptr) (local.get $end)))
          (br_if $trimmed_start (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 32)))
          (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
          (br $skip)))
      (block $trimmed_end
        (loop $skip
          (br_if $trimmed_end (i32.ge_u (local.get $ptr) (local.get $end)))
          (br_if $trimmed_end (i32.ne (i32.load8_u (i32.sub (local.get $end) (i32.const 1))) (i32.const 32)))
          (local.set $end (i32.sub (local.get $end) (i32.const 1)))
          (br $skip)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
          (local.set $c (i32.load8_u (local.get $ptr)))
          (if (i32.eq (local.get $c) (i32.const 46))
            (then
              (if (local.get $point) (then (return (f64.const nan))))
              (local.set $point (i32.const 1)))
            (else
              (if (i32.gt_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9))
                (then (return (f64.const nan))))
              (local.set $digits (i32.add (local.get $digits) (i32.const 1)))
              (local.set $value
                (f64.add (f64.mul (local.get $value) (f64.const 10))
                         (f64.convert_i32_u (i32.sub (local.get $c) (i32.const 48)))))
              (if (local.get $point)
                (then (local.set $scale (f64.mul (local.get $scale) (f64.const 10)))))))
          (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
          (br $next)))
      (if (i32.eqz (local.get $digits)) (then (return (f64.const nan))))
      (f64.div (local.get $value) (local.get $scale)))

    ;; Writes `err(error{case, message})` into the result at $ret and returns $ret.
    (func $fail (param $ret i32) (param $case i32) (param $msg i32) (param $len i32) (result i32)
      (i32.store8 (local.get $ret) (i32.const 1))
      (i32.store8 offset=4 (local.get $ret) (local.get $case))
      (i32.store offset=8 (local.get $ret) (local.get $msg))
      (i32.store offset=12 (local.get $ret) (local.get $len))
      (local.get $ret))

    ;; gather: func(context) -> result<list<sample>, error>
    ;; One `cpu` sample per replica with metrics: usage in percent of the request.
    (func (export "gather") (param $ctx i32) (result i32)
      (local $ret i32) (local $metrics i32) (local $pods i32) (local $npods i32)
      (local $replica i32) (local $rend i32) (local $pod i32) (local $pend i32)
      (local $samples i32) (local $n i32) (local $sample i32)
      (local.set $ret (call $alloc (i32.const 16) (i32.const 4)))
      (local.set $metrics (call $alloc (i32.const 16) (i32.const 4)))
      (call $pod_metrics (local.get $metrics))
      (if (i32.load8_u (local.get $metrics))
        (then ;; pass the capability's error on unchanged
          (memory.copy (i32.add (local.get $ret) (i32.const 4)) (i32.add (local.get $metrics) (i32.const 4)) (i32.const 12))
          (i32.store8 (local.get $ret) (i32.const 1))
          (return (local.get $ret))))
      (local.set $pods (i32.load offset=4 (local.get $metrics)))
      (local.set $npods (i32.load offset=8 (local.get $metrics)))
      (local.set $replica (i32.load offset=76 (local.get $ctx)))
      (local.set $rend (i32.add (local.get $replica) (i32.mul (i32.load offset=80 (local.get $ctx)) (i32.const 56))))
      (local.set $samples (call $alloc (i32.mul (i32.load offset=80 (local.get $ctx)) (i32.const 40)) (i32.const 8)))
      (block $replicas_done
        (loop $next_replica
          (br_if $replicas_done (i32.ge_u (local.get $replica) (local.get $rend)))
          (local.set $pod (local.get $pods))
          (local.set $pend (i32.add (local.get $pods) (i32.mul (local.get $npods) (i32.const 64))))
          (block $pods_done
            (loop $next_pod
              (br_if $pods_done (i32.ge_u (local.get $pod) (local.get $pend)))
              (if (call $streq (i32.load (local.get $pod)) (i32.load offset=4 (local.get $pod))
                               (i32.load (local.get $replica)) (i32.load offset=4 (local.get $replica)))
                (then
                  (if (i32.or (i32.eqz (i32.load8_u offset=24 (local.get $pod)))
                              (i64.eqz (i64.load offset=32 (local.get $pod))))
                    (then (return (call $fail (local.get $ret) (i32.const 0) (i32.const 416) (i32.const 24)))))
                  (local.set $sample (i32.add (local.get $samples) (i32.mul (local.get $n) (i32.const 40))))
                  (i32.store (local.get $sample) (i32.const 16))
                  (i32.store offset=4 (local.get $sample) (i32.const 3))
                  (f64.store offset=8 (local.get $sample)
                    (f64.div
                      (f64.mul (f64.convert_i64_u (i64.load offset=8 (local.get $pod))) (f64.const 100))
                      (f64.convert_i64_u (i64.load offset=32 (local.get $pod)))))
                  (i32.store8 offset=16 (local.get $sample) (i32.const 1))
                  (i32.store offset=20 (local.get $sample) (i32.load (local.get $pod)))
                  (i32.store offset=24 (local.get $sample) (i32.load offset=4 (local.get $pod)))
                  (i32.store offset=28 (local.get $sample) (i32.const 0))
                  (i32.store offset=32 (local.get $sample) (i32.const 0))
                  (local.set $n (i32.add (local.get $n) (i32.const 1)))
                  (br $pods_done)))
              (local.set $pod (i32.add (local.get $pod) (i32.const 64)))
              (br $next_pod)))
          (local.set $replica (i32.add (local.get $replica) (i32.const 56)))
          (br $next_replica)))
      (i32.store8 (local.get $ret) (i32.const 0))
      (i32.store offset=4 (local.get $ret) (local.get $samples))
      (i32.store offset=8 (local.get $ret) (local.get $n))
      (local.get $ret))

    ;; evaluate: func(context, list<sample>) -> result<decision, error>
    ;; desired = ceil(current × average / target), held while |ratio − 1| ≤ tolerance.
    (func (export "evaluate") (param $args i32) (result i32)
      (local $ret i32) (local $entry i32) (local $target f64) (local $tolerance f64)
      (local $sample i32) (local $send i32) (local $sum f64) (local $count i32)
      (local $current i32) (local $ratio f64) (local $desired i32)
      (local.set $ret (call $alloc (i32.const 32) (i32.const 4)))
      (local.set $entry (call $config (local.get $args) (i32.const 32) (i32.const 17)))
      (if (i32.eqz (local.get $entry))
        (then (return (call $fail (local.get $ret) (i32.const 0) (i32.const 128) (i32.const 29)))))
      (local.set $target (call $number (i32.load offset=8 (local.get $entry)) (i32.load offset=12 (local.get $entry))))
      ;; NaN fails every comparison, so `not (target >= 0)` catches it too.
      (if (i32.eqz (f64.ge (local.get $target) (f64.const 0)))
        (then (return (call $fail (local.get $ret) (i32.const 0) (i32.const 192) (i32.const 47)))))
      (if (f64.eq (local.get $target) (f64.const 0))
        (then (return (call $fail (local.get $ret) (i32.const 0) (i32.const 256) (i32.const 33)))))
      (local.set $tolerance (f64.const 0.1))
      (local.set $entry (call $config (local.get $args) (i32.const 64) (i32.const 9)))
      (if (local.get $entry)
        (then
          (local.set $tolerance (call $number (i32.load offset=8 (local.get $entry)) (i32.load offset=12 (local.get $entry))))
          (if (i32.eqz (f64.ge (local.get $tolerance) (f64.const 0)))
            (then (return (call $fail (local.get $ret) (i32.const 0) (i32.const 320) (i32.const 39)))))))
      (local.set $sample (i32.load offset=96 (local.get $args)))
      (local.set $send (i32.add (local.get $sample) (i32.mul (i32.load offset=100 (local.get $args)) (i32.const 40))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $sample) (local.get $send)))
          (if (call $streq (i32.load (local.get $sample)) (i32.load offset=4 (local.get $sample)) (i32.const 16) (i32.const 3))
            (then
              (local.set $sum (f64.add (local.get $sum) (f64.load offset=8 (local.get $sample))))
              (local.set $count (i32.add (local.get $count) (i32.const 1)))))
          (local.set $sample (i32.add (local.get $sample) (i32.const 40)))
          (br $next)))
      (if (i32.eqz (local.get $count))
        (then (return (call $fail (local.get $ret) (i32.const 1) (i32.const 384) (i32.const 14)))))
      (local.set $current (i32.load offset=56 (local.get $args)))
      (local.set $ratio
        (f64.div (f64.div (local.get $sum) (f64.convert_i32_u (local.get $count))) (local.get $target)))
      (local.set $desired
        (if (result i32) (f64.le (f64.abs (f64.sub (local.get $ratio) (f64.const 1))) (local.get $tolerance))
          (then (local.get $current))
          (else (i32.trunc_sat_f64_u (f64.ceil (f64.mul (f64.convert_i32_u (local.get $current)) (local.get $ratio)))))))
      (i32.store8 (local.get $ret) (i32.const 0))
      (i32.store offset=4 (local.get $ret) (local.get $desired))
      (i32.store8 offset=8 (local.get $ret) (i32.const 0))  ;; reason: none
      (i32.store8 offset=20 (local.get $ret) (i32.const 0)) ;; remove-first: none
      (local.get $ret))
  )

  (core instance $main (instantiate $Main
    (with "host" (instance (export "pod-metrics" (func $pod-metrics))))
    (with "memory" (instance $memory))
  ))

  ;; ---------------------------------------------------------------- the exports
  ;; More than 16 flat parameters: the host writes the arguments to memory (via $realloc) and
  ;; passes their address; the results come back through an address the guest returns.
  (func $gather (param "context" $context) (result (result (list $sample) (error $error)))
    (canon lift (core func $main "gather") (memory $mem) (realloc $realloc)))
  (func $evaluate (param "context" $context) (param "samples" (list $sample))
                  (result (result $decision (error $error)))
    (canon lift (core func $main "evaluate") (memory $mem) (realloc $realloc)))
  (instance $metrics
    (export "context" (type $context))
    (export "sample" (type $sample))
    (export "error" (type $error))
    (export "gather" (func $gather)))
  (instance $evaluation
    (export "context" (type $context))
    (export "sample" (type $sample))
    (export "decision" (type $decision))
    (export "error" (type $error))
    (export "evaluate" (func $evaluate)))
  (export "wasmscaler:policy/metrics@0.1.0" (instance $metrics))
  (export "wasmscaler:policy/evaluation@0.1.0" (instance $evaluation))
)
