//! The shared listening socket on `$PORT`, and the `NOTIFY_SOCKET` workers report readiness on.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    SockaddrIn, SockaddrIn6,
};

/// The listen backlog: room for a burst while every worker is busy or still booting. The kernel
/// caps it at net.core.somaxconn.
pub const BACKLOG: i32 = 2048;

/// A bound, listening TCP socket, close-on-exec (each child gets its own copy as fd 3).
pub struct Listener {
    pub fd: OwnedFd,
    /// `[::]:PORT` or `0.0.0.0:PORT`, for the log.
    pub address: String,
    /// Its inode, as /proc names it in a worker's fds (`socket:[INODE]`): how a worker is seen
    /// to wait on it, and drained from it.
    pub inode: Option<u64>,
}

/// Binds `[::]:port` accepting IPv4 too where the host has IPv6, else `0.0.0.0:port`.
pub fn listen(port: u16) -> Result<Listener, String> {
    let (fd, address) = match bind_v6(port) {
        Ok(fd) => (fd, format!("[::]:{port}")),
        Err(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL) => (
            bind_v4(port).map_err(|e| explain(e, port))?,
            format!("0.0.0.0:{port}"),
        ),
        Err(err) => return Err(explain(err, port)),
    };
    // Connections accepted from the socket inherit it. uvicorn --fd wraps fd 3 as a Unix socket,
    // so asyncio never sets TCP_NODELAY on them as it does on a TCP socket of its own: without
    // this, every response split in two writes waits ~40 ms for Nagle and delayed ACKs.
    socket::setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(|e| explain(e, port))?;
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    socket::listen(&fd, backlog).map_err(|e| explain(e, port))?;
    let inode = crate::supervisor::reading::serving::socket_inode(&fd);
    Ok(Listener { fd, address, inode })
}

/// A listening socket's accept queue: the connections waiting for a worker to accept them, and
/// the backlog they may fill (what the last `listen()` asked for, capped by
/// `net.core.somaxconn`). Linux gives both for a socket in LISTEN in `TCP_INFO`'s `tcpi_unacked`
/// and `tcpi_sacked`: one system call, no lock. A server that calls `listen()` again on the
/// inherited socket (unicorn, Node) changes the backlog, which this reads back.
pub fn accept_queue(socket: impl AsFd) -> Option<(u32, u32)> {
    listening(socket).ok().flatten()
}

/// The TCP state of a socket that is not listening, by its kernel name (`CLOSE` after a
/// `shutdown()` by any process that shares it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotListening(pub u8);

impl NotListening {
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 12] = [
            "",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
        ];
        NAMES.get(usize::from(self.0)).copied().unwrap_or("unknown")
    }
}

/// A listening socket's accept queue and backlog; `Err` with its state when it is not listening
/// any more; `Ok(None)` when `TCP_INFO` cannot be read at all.
pub fn listening(socket: impl AsFd) -> Result<Option<(u32, u32)>, NotListening> {
    const TCP_LISTEN: u8 = 10;
    // SAFETY: a zeroed tcp_info is a valid value of the plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `info`, which is that large.
    let done = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut length,
        )
    };
    match (done, info.tcpi_state) {
        (0, TCP_LISTEN) => Ok(Some((info.tcpi_unacked, info.tcpi_sacked))),
        (0, state) => Err(NotListening(state)),
        _ => Ok(None),
    }
}

/// Listens again on the bound socket after it left LISTEN: the port stays bound to it (bound by
/// number, the kernel keeps the binding), and every process that shares it accepts again.
pub fn listen_again(listener: &Listener) -> nix::Result<()> {
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    socket::listen(&listener.fd, backlog)
}

fn tcp_socket(family: AddressFamily) -> nix::Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // Lets a restarted dyno bind again while old connections sit in TIME_WAIT.
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    Ok(fd)
}

fn bind_v6(port: u16) -> nix::Result<OwnedFd> {
    let fd = tcp_socket(AddressFamily::Inet6)?;
    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    let any = SockaddrIn6::from(std::net::SocketAddrV6::new(
        std::net::Ipv6Addr::UNSPECIFIED,
        port,
        0,
        0,
    ));
    socket::bind(fd.as_raw_fd(), &any)?;
    Ok(fd)
}

fn bind_v4(port: u16) -> nix::Result<OwnedFd> {
    let fd = tcp_socket(AddressFamily::Inet)?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))?;
    Ok(fd)
}

fn explain(err: Errno, port: u16) -> String {
    match err {
        Errno::EADDRINUSE => format!(
            "cannot listen on port {port}: it is already in use by another process \
             (is the app started twice, or does something else bind $PORT?)"
        ),
        Errno::EACCES => format!(
            "cannot listen on port {port}: permission denied (ports below 1024 need privileges)"
        ),
        err => format!("cannot listen on port {port}: {}", err.desc()),
    }
}

/// An abstract-namespace datagram socket for sd_notify messages, with the sender's pid attached
/// to each message by the kernel (SO_PASSCRED).
pub struct Notify {
    socket: UnixDatagram,
    /// The value of `NOTIFY_SOCKET` for children: `@name`.
    pub name: String,
}

impl Notify {
    pub fn bind() -> std::io::Result<Notify> {
        let name = format!("launcher-notify-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&address)?;
        socket.set_nonblocking(true)?;
        socket::setsockopt(&socket, sockopt::PassCred, &true)?;
        Ok(Notify {
            socket,
            name: format!("@{name}"),
        })
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The pids that sent `READY=1` since the last call, reading at most `max` messages, and
    /// whether more may be waiting.
    pub fn ready_senders(&self, max: usize) -> (Vec<i32>, bool) {
        let mut senders = Vec::new();
        let mut buffer = [0u8; 4096];
        for _ in 0..max {
            let mut control = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let Ok(message) = socket::recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_DONTWAIT,
            ) else {
                return (senders, false);
            };
            let sender = message.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                    _ => None,
                })
            });
            let length = message.bytes;
            let text = String::from_utf8_lossy(&buffer[..length]);
            let ready = sender.filter(|_| text.lines().any(|l| l == "READY=1"));
            if let Some(pid) = ready.filter(|pid| !senders.contains(pid)) {
                senders.push(pid);
            }
        }
        (senders, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_queue_and_backlog_are_read_back_from_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (queued, backlog) = accept_queue(&listener).expect("a listening socket");
        assert_eq!(queued, 0);
        assert!(backlog > 0, "{backlog}");
        let address = listener.local_addr().expect("address");
        let _waiting: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(address).expect("connect"))
            .collect();
        assert_eq!(
            accept_queue(&listener).expect("queue").0,
            3,
            "three not accepted yet"
        );
        // SAFETY: listen(2) on a socket this test owns.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 7) }, 0);
        assert_eq!(
            accept_queue(&listener).expect("queue").1,
            7,
            "listen() again"
        );
        let client = std::net::TcpStream::connect(address).expect("connect");
        assert_eq!(accept_queue(&client), None, "not a listening socket");
    }
}
