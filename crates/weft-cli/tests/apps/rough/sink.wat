(module
  (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $sum (mut i64) (i64.const 0))
  (func (export "weft_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_message") (param $port i32) (param $ptr i32) (param $len i32) (param $tag i64)
    ;; sum = sum * 31 + first word of the message + port: order matters
    (global.set $sum (i64.add (i64.mul (global.get $sum) (i64.const 31))
      (i64.add (i64.load (local.get $ptr)) (i64.extend_i32_u (local.get $port)))))
    (i64.store (i32.const 0) (global.get $sum))
    (drop (call $send (i32.const 2) (i32.const 0) (i32.const 8)))))
