;; weft example `heartbeat`: a hand-written WAT reactor.
;;
;; Periodic process. weft_init resolves output port `beat` and keeps its
;; handle in a global; every weft_tick increments a counter (kept both in a
;; mutable global and at memory offset 0) and sends it as 8 bytes (u64 LE)
;; on `beat`.
;;
;; Imports only weft.port and weft.send: capability `ports`.
(module
  (import "weft" "port" (func $port (param i32 i32) (result i32)))
  (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; 0..8: the counter as sent; 16..20: the port name.
  (data (i32.const 16) "beat")

  ;; Handle of `beat` (UNKNOWN = -4 until weft_init resolves it).
  (global $beat (mut i32) (i32.const -4))
  ;; Number of ticks so far.
  (global $count (mut i64) (i64.const 0))

  (func (export "weft_init")
    (global.set $beat (call $port (i32.const 16) (i32.const 4))))

  (func (export "weft_tick") (param $tag i64)
    (global.set $count (i64.add (global.get $count) (i64.const 1)))
    (i64.store (i32.const 0) (global.get $count))
    ;; Status ignored: a full outbox just drops this beat.
    (drop (call $send (global.get $beat) (i32.const 0) (i32.const 8)))))
