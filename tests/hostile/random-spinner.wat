;; A metric source that spends its call in host code: it asks wasi:random for 65536 bytes
;; (tests substitute other sizes), again and again, forever. Each request costs the guest
;; almost no wasm instructions, so without a per-call cap, a fuel charge per byte and yields
;; at every epoch tick it would hold a runtime worker for its whole deadline.
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

  (import "wasi:random/random@0.2.0" (instance $random
    (export "get-random-bytes" (func (param "len" u64) (result (list u8))))))

  (core module $Memory
    ;; 72 MiB: room for one 64 MiB answer.
    (memory (export "memory") 1152)
    ;; Every answer lands at the same address: nothing is kept.
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024)))
  (core instance $memory (instantiate $Memory))
  (alias core export $memory "memory" (core memory $mem))
  (alias core export $memory "cabi_realloc" (core func $realloc))
  (core func $get-random-bytes
    (canon lower (func $random "get-random-bytes") (memory $mem) (realloc $realloc)))

  (core module $Main
    (import "host" "get-random-bytes" (func $rand (param i64 i32)))
    (func (export "gather") (param i32) (result i32)
      (loop $spin
        (call $rand (i64.const 65536) (i32.const 64))
        (br $spin))
      (i32.const 0)))
  (core instance $main (instantiate $Main
    (with "host" (instance (export "get-random-bytes" (func $get-random-bytes))))))

  (func $gather (param "context" $context) (result (result (list $sample) (error $error)))
    (canon lift (core func $main "gather") (memory $mem) (realloc $realloc)))
  (instance $metrics
    (export "context" (type $context))
    (export "sample" (type $sample))
    (export "error" (type $error))
    (export "gather" (func $gather)))
  (export "wasmscaler:policy/metrics@0.1.0" (instance $metrics))
)
