//! The queue, CPU and busy figures, on real sockets of this process and on fake readings.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use super::*;

fn listener(backlog: i32) -> (net::Listener, u16) {
    let std = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = std.local_addr().expect("address").port();
    let fd = OwnedFd::from(std);
    // SAFETY: listen on a socket this test owns, to shrink the backlog std chose.
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&fd), backlog) },
        0
    );
    let address = format!("127.0.0.1:{port}");
    let inode = crate::supervisor::reading::serving::socket_inode(&fd);
    (net::Listener { fd, address, inode }, port)
}

fn connect(port: u16) -> Option<TcpStream> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).ok()
}

fn load(now: Instant) -> Load {
    let meter = CpuMeter::OwnTree {
        pid: std::process::id() as i32,
    };
    Load::new(Duration::from_millis(100), meter, 2.0, now)
}

#[test]
fn the_queue_is_read_on_its_interval_with_its_peak() {
    let (listener, port) = listener(64);
    let start = Instant::now();
    let mut load = load(start);
    let first = load
        .read_queue(&listener, start)
        .expect("read")
        .expect("listening");
    assert_eq!(first.queued, 0);
    assert_eq!(first.backlog, 64);
    assert_eq!(load.read_queue(&listener, start), None, "not due yet");
    let clients: Vec<TcpStream> = (0..3).filter_map(|_| connect(port)).collect();
    assert_eq!(clients.len(), 3);
    let later = start + Duration::from_millis(100);
    assert_eq!(
        load.read_queue(&listener, later)
            .map(|r| r.expect("listening").queued),
        Some(3)
    );
    let snapshot = Snapshot::live();
    let figures = load.sample(&snapshot, later, Duration::from_secs(1));
    assert_eq!(figures.queue_max, Some(3));
    let after = load.sample(&snapshot, later, Duration::from_secs(1));
    assert_eq!(after.queue_max, None, "no read since the last sample");
    assert!(load.take_events().is_empty(), "not full");
}

#[test]
fn a_full_queue_is_warned_of_at_most_every_ten_seconds() {
    let (listener, port) = listener(1);
    let _clients: Vec<TcpStream> = (0..2).filter_map(|_| connect(port)).collect();
    let start = Instant::now();
    let mut load = load(start);
    let mut warnings = 0;
    for i in 0..150 {
        load.read_queue(&listener, start + Duration::from_millis(100 * i));
        warnings += load
            .take_events()
            .iter()
            .filter(|e| e.name == "listen_queue_full")
            .count();
    }
    assert_eq!(warnings, 2, "15 s of a full queue");
}

#[test]
fn cpu_busy_is_over_the_window_asked_for() {
    let start = Instant::now();
    let mut load = load(start);
    assert_eq!(load.cpu_busy(Duration::from_secs(1)), None);
    // 2 CPUs; 1 CPU-second per second for 10 s, then 2 per second.
    for i in 0..=20u64 {
        let used = if i <= 10 { i } else { 10 + 2 * (i - 10) };
        let at = start + Duration::from_secs(i);
        load.cpu_readings.push_back((at, Duration::from_secs(used)));
    }
    let recent = load.cpu_busy(Duration::from_secs(2)).expect("busy");
    assert!((recent - 1.0).abs() < 1e-9, "{recent}");
    let whole = load.cpu_busy(Duration::from_secs(60)).expect("busy");
    assert!((whole - 0.75).abs() < 1e-9, "from the oldest: {whole}");
}

#[test]
fn a_queue_at_its_backlog_is_not_full_yet() {
    // The kernel takes one connection more than the backlog before it drops any.
    let (listener, port) = listener(2);
    let clients: Vec<TcpStream> = (0..2).filter_map(|_| connect(port)).collect();
    assert_eq!(clients.len(), 2);
    let start = Instant::now();
    let mut load = load(start);
    let read = load
        .read_queue(&listener, start)
        .expect("read")
        .expect("listening");
    assert_eq!((read.queued, read.backlog), (2, 2));
    assert!(load.take_events().is_empty(), "not full at its backlog");
}
