;; A component importing an interface the wasmscaler:policy contract does not define: the host
;; must refuse it by name before anything runs.
(component
  (import "wasmscaler:policy/secrets@0.1.0" (instance
    (export "get" (func (result u32))))))
