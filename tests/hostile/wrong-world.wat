;; A valid component that implements some other contract: it exports
;; `example:other/greeter@1.0.0` and nothing wasmscaler can call.
(component
  (core module $m
    (func (export "hello") (result i32) i32.const 42))
  (core instance $i (instantiate $m))
  (func $hello (result u32) (canon lift (core func $i "hello")))
  (instance $api (export "hello" (func $hello)))
  (export "example:other/greeter@1.0.0" (instance $api)))
