//! lifeguard-agent: not built yet. The crate exists so the workspace's dependency boundaries
//! (no EC2 SDK in the agent) hold from the start.

fn main() {
    eprintln!(
        "lifeguard-agent {}: not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(69);
}
