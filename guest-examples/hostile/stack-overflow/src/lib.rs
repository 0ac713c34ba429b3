//! Hostile guest: recurses without end on WebAssembly's own call stack.
//!
//! Contract: the host answers 500 with a reason naming the stack overflow.
//!
//! (A Rust guest whose frames hold large locals overflows its shadow stack in linear memory
//! first; that shows up as an out-of-bounds trap, which the host also answers with 500.)

use fog_sdk::{Request, Response};

#[inline(never)]
#[allow(unconditional_recursion)]
fn dive(depth: u64) -> u64 {
    std::hint::black_box(depth).wrapping_add(dive(std::hint::black_box(depth + 1)))
}

fn handle(_req: Request) -> Response {
    Response::text(format!("{}", dive(0)))
}

fog_sdk::app!(handle);
