//! Hostile guest: tries to read host files, list the root directory and open a TCP connection to
//! `127.0.0.1:<port>` (`?port=N`).
//!
//! Contract: answers 200 with three lines, `file: ...`, `dir: ...` and `socket: ...`, each
//! starting `blocked` when the host refused and `open` when it allowed the access. Without
//! permission in its manifest, a Fog host must make all three say `blocked`.

use fog_sdk::{Request, Response};

fn handle(req: Request) -> Response {
    let file = match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => format!("open ({} bytes)", text.len()),
        Err(err) => format!("blocked ({err})"),
    };
    let dir = match std::fs::read_dir("/") {
        Ok(entries) => format!("open ({} entries)", entries.count()),
        Err(err) => format!("blocked ({err})"),
    };
    let port = req.query_param("port").unwrap_or_else(|| "9".into());
    let socket = match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
        Ok(_) => "open".to_string(),
        Err(err) => format!("blocked ({err})"),
    };
    Response::text(format!("file: {file}\ndir: {dir}\nsocket: {socket}\n"))
}

fog_sdk::app!(handle);
