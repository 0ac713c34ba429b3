//! Hostile guest: panics on every request (a Rust panic aborts, which traps).
//!
//! Contract: the host answers 500 with a reason saying the guest trapped, quoting the panic
//! message "hostile guest panicked on purpose".

use fog_sdk::{Request, Response};

fn handle(req: Request) -> Response {
    if req.path() != "/never" {
        panic!("hostile guest panicked on purpose");
    }
    Response::text("unreachable")
}

fog_sdk::app!(handle);
