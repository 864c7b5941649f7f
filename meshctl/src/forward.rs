//! `meshctl dashboard envoy POD`: a proxy's admin (its loopback-only 15000) opened on a local
//! port, as `istioctl dashboard envoy` does, for people who want the raw admin pages. Each
//! connection accepted is carried over its own connection into the mesh (a namespace entered,
//! or a port-forward).

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use mesh_api::ports;

use crate::access::{self, AccessError, Mesh, MeshArgs, Target};

/// Connections carried at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;

/// Flags of `meshctl dashboard envoy`.
#[derive(Debug, Args)]
pub struct EnvoyArgs {
    /// The pod (`name` or `name.namespace`).
    pub pod: String,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// The local port (0: any free port).
    #[arg(long, default_value_t = ports::PROXY_ADMIN)]
    pub port: u16,
}

/// Opens the pod's admin on a local port and carries connections until interrupted.
pub fn envoy(args: &EnvoyArgs, mesh: &MeshArgs) -> Result<(), AccessError> {
    let mesh: Arc<dyn Mesh> = Arc::from(access::choose(mesh)?);
    let pod = mesh.find_pod(&args.pod)?;
    // Reaching the admin once first makes a wrong pod an error now, not on the first click.
    access::get(mesh.as_ref(), &Target::Pod(pod.clone()), ports::PROXY_ADMIN, "/ready").or_else(
        |e| match e {
            // Draining or starting: the admin is there, which is all this needs.
            AccessError::Http { .. } => Ok(String::new()),
            other => Err(other),
        },
    )?;
    let listen = SocketAddr::new(args.address, args.port);
    let listener = TcpListener::bind(listen).map_err(|e| {
        AccessError::io(&format!("cannot listen on {listen} (another port: --port N, or 0)"), e)
    })?;
    let local = listener.local_addr().map_err(|e| AccessError::io("listener", e))?;
    println!("The admin of {pod} ({}) is at http://{local}/  (Ctrl-C ends it)", mesh.describe());
    serve(&listener, mesh, Target::Pod(pod), ports::PROXY_ADMIN)
}

/// Carries every connection `listener` accepts to `port` of `target`.
pub fn serve(
    listener: &TcpListener,
    mesh: Arc<dyn Mesh>,
    target: Target,
    port: u16,
) -> Result<(), AccessError> {
    let open = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (open, mesh, target) = (open.clone(), mesh.clone(), target.clone());
        std::thread::spawn(move || {
            match mesh.connect(&target, port) {
                Ok(upstream) => carry(client, upstream),
                Err(e) => eprintln!("{e}"),
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

/// Copies bytes both ways until both sides are done.
fn carry(client: TcpStream, upstream: Box<dyn access::Conn>) {
    let (Ok(mut client_read), Ok(mut upstream_write)) =
        (client.try_clone(), upstream.try_clone_conn())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown_write();
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = up.join();
}
