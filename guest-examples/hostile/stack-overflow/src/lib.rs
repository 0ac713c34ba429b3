//! Hostile guest: recurses without end.
//!
//! Contract: the host answers 500 with a reason naming the stack overflow.

use fog_sdk::{Request, Response};

#[inline(never)]
#[allow(unconditional_recursion)]
fn dive(depth: u64, pad: [u64; 16]) -> u64 {
    let pad = std::hint::black_box(pad);
    pad[(depth % 16) as usize] + dive(depth + 1, pad)
}

fn handle(_req: Request) -> Response {
    Response::text(format!("{}", dive(0, [1; 16])))
}

fog_sdk::app!(handle);
