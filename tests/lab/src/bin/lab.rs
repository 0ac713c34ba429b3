//! `lab`: the network lab for people (`scripts/lab.sh`) — builds the standard topology (a control
//! plane, two routers, a public host, four devices behind NAT) as namespaces `foglab-<node>`
//! that stay until `lab down`.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use fog_lab::{Lab, LabError, Links};

/// The persistent lab's name: namespaces are `foglab-<node>`.
const NAME: &str = "foglab";
const PUBLIC: [&str; 4] = ["control", "router1", "router2", "host5"];
const NATED: [&str; 4] = ["dev1", "dev2", "dev3", "dev4"];

const USAGE: &str = "\
usage: lab up | down | status | exec NODE CMD...
  up       build the lab: internet 198.18.0.1; control, router1, router2, host5 at
           198.18.0.10-13; dev1-dev4 at 198.19.k.2 behind NATs at 198.18.0.(100+k)
  down     remove the lab's namespaces and everything running in them
  status   list the lab's namespaces and their addresses
  exec     run CMD in NODE's namespace (a node, `internet` or `devK-nat`)
  serve P  answer every TCP connection on port P with \"hello\\n\" (a listener for tests)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(),
        Some("down") => down(),
        Some("status") => status(),
        Some("exec") if args.len() >= 3 => exec(&args[1], &args[2..]),
        Some("serve") if args.len() == 2 => serve(&args[1]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up() -> Result<(), LabError> {
    fog_lab::preflight()?;
    if !fog_lab::describe_named(NAME)?.is_empty() {
        println!("the lab is already up (`scripts/lab.sh down` removes it)");
        return status();
    }
    let mut builder = Lab::builder().name(NAME).links(Links::Kernel);
    for node in PUBLIC {
        builder = builder.public(node);
    }
    for node in NATED {
        builder = builder.nated(node);
    }
    builder.build()?.keep()?;
    status()
}

fn down() -> Result<(), LabError> {
    let removed = fog_lab::remove_named(NAME)?;
    println!("removed {} namespaces", removed.len());
    Ok(())
}

fn status() -> Result<(), LabError> {
    let found = fog_lab::describe_named(NAME)?;
    if found.is_empty() {
        println!("the lab is down (`scripts/lab.sh up` builds it)");
    }
    for (ns, addrs) in found {
        println!("{ns:<16} {}", addrs.join(", "));
    }
    Ok(())
}

fn serve(port: &str) -> Result<(), LabError> {
    let bind = format!("0.0.0.0:{port}");
    let listener = TcpListener::bind(&bind).map_err(|e| LabError::Io {
        what: format!("cannot listen on {bind}"),
        source: e,
    })?;
    for mut stream in listener.incoming().flatten() {
        // A client that went away is no reason to stop serving the next.
        let _ = stream.write_all(b"hello\n");
    }
    Ok(())
}

fn exec(node: &str, cmd: &[String]) -> Result<(), LabError> {
    let ns = format!("{NAME}-{node}");
    if !fog_lab::list_namespaces()?.contains(&ns) {
        return Err(LabError::UnknownNode(node.to_owned()));
    }
    let err = Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(cmd)
        .exec();
    Err(LabError::Io {
        what: "cannot run ip netns exec".into(),
        source: err,
    })
}
