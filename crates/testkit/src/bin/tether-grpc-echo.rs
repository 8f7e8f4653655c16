//! tether-grpc-echo: the test gRPC service (`tether_testkit::grpc`) in a
//! process of its own, so a test can kill it mid-stream. Prints
//! `tether-grpc-echo NAME grpc listening on ADDR` once it listens; SIGTERM
//! stops it gracefully (GOAWAY, in-flight calls finish).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "tether-grpc-echo", about = "A gRPC test service")]
struct Args {
    /// Address to listen on; port 0 lets the system pick one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name sent back in every answer.
    #[arg(long, default_value = "grpc-echo")]
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tether-grpc-echo: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "tether-grpc-echo {} grpc listening on {addr}",
        args.name
    );
    let _ = stdout.flush();
    drop(stdout);
    let stop = async {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
        }
    };
    match tether_testkit::grpc::serve(listener, &args.name, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-grpc-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
