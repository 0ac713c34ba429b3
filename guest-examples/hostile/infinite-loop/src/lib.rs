//! Hostile guest: spins forever on every request.
//!
//! Contract: the host answers 500 with a reason naming the fuel budget (or the deadline when the
//! fuel budget is larger than the deadline allows), and keeps serving everything else.

use fog_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
        if std::hint::black_box(x) == u64::MAX {
            break;
        }
    }
    Response::text("unreachable")
}

fog_sdk::app!(handle);
