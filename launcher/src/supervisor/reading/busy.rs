//! Which workers are busy: a worker is busy while it, or a process under it, holds a connection
//! accepted from the launcher's socket (`diag` asks the kernel for those connections). For a
//! server whose workers accept only when free (gunicorn's sync workers, unicorn) that is exactly
//! while it serves a request (docs/architecture.md, "Adaptive sizing").

use std::collections::HashSet;
use std::path::Path;

use crate::procs;

/// Whether the worker's descriptors cannot be read (`/proc/PID/fd` needs the right to trace it: a
/// worker that changed its user or made itself not dumpable keeps it; or it has ended): whether
/// it serves cannot be seen.
pub fn fds_unreadable(proc_dir: &Path, worker: i32) -> bool {
    std::fs::read_dir(proc_dir.join(worker.to_string()).join("fd")).is_err()
}

/// Those of `workers` that hold a connection from `sockets`: in it, or in a process under it. A
/// worker of a server that accepts only when free (gunicorn's sync workers, unicorn) holds one
/// exactly while it serves a request.
pub fn busy_workers(proc_dir: &Path, workers: &[i32], sockets: &HashSet<u64>) -> Vec<i32> {
    if sockets.is_empty() {
        return Vec::new();
    }
    let holds = |pid: i32| {
        let Ok(fds) = std::fs::read_dir(proc_dir.join(pid.to_string()).join("fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let text = target.to_string_lossy();
            let inode = text
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'));
            inode
                .and_then(|i| i.parse().ok())
                .is_some_and(|i| sockets.contains(&i))
        })
    };
    let busy = workers
        .iter()
        .filter(|worker| procs::tree(proc_dir, **worker).into_iter().any(holds));
    busy.copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Snapshot;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn connect(port: u16) -> Option<TcpStream> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&address, Duration::from_millis(300)).ok()
    }

    #[test]
    fn a_worker_whose_descriptors_cannot_be_read_is_said_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("10/fd")).expect("fd dir");
        std::fs::create_dir_all(dir.path().join("11")).expect("no fd dir in it");
        assert!(!fds_unreadable(dir.path(), 10));
        assert!(fds_unreadable(dir.path(), 11));
    }

    #[test]
    fn an_accepted_connection_makes_its_holder_busy() {
        let std = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = std.local_addr().expect("address").port();
        let client = connect(port).expect("connect");
        let proc_dir = &Snapshot::live().proc_dir();
        let me = [std::process::id() as i32];
        let socket = super::super::diag::Socket::of(&std).expect("bound");
        let accepted = || super::super::diag::accepted_sockets(socket).expect("sock_diag");
        assert_eq!(
            busy_workers(proc_dir, &me, &accepted()).len(),
            0,
            "still queued"
        );
        let (served, _) = std.accept().expect("accept");
        assert_eq!(busy_workers(proc_dir, &me, &accepted()), me);
        let mut other = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("sleep");
        let without = [other.id() as i32];
        assert_eq!(
            busy_workers(proc_dir, &without, &accepted()).len(),
            0,
            "not its connection"
        );
        other.kill().expect("kill");
        other.wait().expect("reap");
        drop(served);
        drop(client);
        assert_eq!(busy_workers(proc_dir, &me, &accepted()).len(), 0);
    }
}
