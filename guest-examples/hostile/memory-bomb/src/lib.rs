//! Hostile guest: allocates and touches 1 MiB blocks until something stops it.
//!
//! Contract: the host answers 500 with a reason naming the memory limit.

use fog_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        blocks.push(std::hint::black_box(block));
        if blocks.len() == usize::MAX {
            break;
        }
    }
    Response::text(format!("{}", blocks.len()))
}

fog_sdk::app!(handle);
