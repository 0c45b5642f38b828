//! The connections accepted from the launcher's socket, asked of the kernel as `ss` does: a
//! `NETLINK_SOCK_DIAG` dump (`SOCK_DIAG_BY_FAMILY`, linux/inet_diag.h) of the TCP sockets of the
//! socket's address family and port in every state but LISTEN and TIME_WAIT. /proc/net/tcp would
//! list every TIME_WAIT socket too: with clients that reconnect for each request (gunicorn's sync
//! workers close every connection) that is megabytes of text every read.
//!
//! The kernel walks its whole table of TCP connections for a dump (262144 buckets on this 2-CPU
//! VM, shared by every network namespace of the host unless one was given its own), whatever the
//! filter: read every check by adaptive sizing of threaded workers, that walk was most of the
//! launcher's own CPU time. So one family only, the socket's own (the connections of a
//! dual-stack `[::]` socket are all IPv6 ones, an IPv4 client's too), and the port is given to
//! the kernel, which then builds no message for another port's sockets.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{getsockname, SockaddrLike, SockaddrStorage};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HEADER: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then the 48-byte socket id.
const REQUEST: usize = 56;
/// `struct inet_diag_msg` up to and including `idiag_inode`.
const MESSAGE: usize = 72;
/// TCP states (include/net/tcp_states.h) as `1 << state`: all but TIME_WAIT (6), CLOSE (7) and
/// LISTEN (10). A connection still in the accept queue has no inode, and is passed over.
const STATES: u32 =
    (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// A listening socket as the kernel is asked about its connections: its port and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
}

impl Socket {
    /// The port and family `fd` is bound to.
    pub fn of(fd: &impl AsFd) -> io::Result<Socket> {
        let address: SockaddrStorage = getsockname(fd.as_fd().as_raw_fd())?;
        let (port, family) = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => (v4.port(), libc::AF_INET),
            (_, Some(v6)) => (v6.port(), libc::AF_INET6),
            _ => {
                let family = address.family();
                let message = format!("not an IP socket ({family:?})");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
            }
        };
        Ok(Socket {
            port,
            family: family as u8,
        })
    }
}

/// The inodes of the TCP connections accepted from `socket`, in this network namespace.
pub fn accepted_sockets(socket: Socket) -> io::Result<HashSet<u64>> {
    Ok(accepted(socket)?.into_keys().collect())
}

/// The connections accepted from `socket`, by inode, with the bytes the kernel holds for each
/// that its process has not read (`idiag_rqueue`): a request that waits inside a worker for one
/// of its threads (gunicorn's gthread reads a request in the thread that serves it).
pub fn accepted(socket: Socket) -> io::Result<HashMap<u64, u32>> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let netlink = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut found = HashMap::new();
    dump(&netlink, socket, &mut found)?;
    Ok(found)
}

fn dump(netlink: &OwnedFd, socket: Socket, found: &mut HashMap<u64, u32>) -> io::Result<()> {
    let mut request = [0u8; HEADER + REQUEST];
    request[0..4].copy_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[HEADER] = socket.family;
    request[HEADER + 1] = libc::IPPROTO_TCP as u8;
    request[HEADER + 4..HEADER + 8].copy_from_slice(&STATES.to_ne_bytes());
    // The socket id's `idiag_sport`, in network order: the kernel passes over other ports.
    request[HEADER + 8..HEADER + 10].copy_from_slice(&socket.port.to_be_bytes());
    // SAFETY: send(2) of a buffer this function owns, its length given.
    let sent = unsafe {
        libc::send(
            netlink.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: recv(2) into a buffer this function owns, at most its length.
        let got = unsafe {
            libc::recv(
                netlink.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if parse(&buffer[..got as usize], socket.port, found)? {
            return Ok(());
        }
    }
}

/// The netlink messages of one datagram; true at the end of the dump.
fn parse(mut data: &[u8], port: u16, found: &mut HashMap<u64, u32>) -> io::Result<bool> {
    let field = |bytes: &[u8], at: usize| -> u32 {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u32::from_ne_bytes(word)
    };
    while data.len() >= HEADER {
        let length = field(data, 0) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if length < HEADER || length > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a truncated netlink message",
            ));
        }
        let body = &data[HEADER..length];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = if body.len() >= 4 {
                    field(body, 0) as i32
                } else {
                    0
                };
                return match code {
                    0 => Ok(true),
                    code => Err(io::Error::from_raw_os_error(-code)),
                };
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= MESSAGE => {
                // The id starts at 4; its source port is big-endian.
                let local_port = u16::from_be_bytes([body[4], body[5]]);
                let unread = field(body, 56);
                let inode = u64::from(field(body, 68));
                if local_port == port && inode != 0 {
                    found.insert(inode, unread);
                }
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let next = length.div_ceil(4) * 4;
        data = data.get(next..).unwrap_or_default();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn inode(stream: &TcpStream) -> u64 {
        nix::sys::stat::fstat(stream).expect("fstat").st_ino
    }

    #[test]
    fn the_accepted_ends_of_connections_are_found_by_port() {
        for address in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(address) else {
                continue; // no IPv6 here
            };
            let socket = Socket::of(&listener).expect("bound");
            let client =
                TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
            assert!(
                accepted_sockets(socket).expect("dump").is_empty(),
                "not accepted yet"
            );
            let (served, _) = listener.accept().expect("accept");
            let found = accepted_sockets(socket).expect("dump");
            assert_eq!(
                found,
                HashSet::from([inode(&served)]),
                "{address}: not the client's end"
            );
            drop(served);
            drop(client);
        }
    }

    /// The launcher's socket is `[::]` where the host has IPv6: an IPv4 client's connection is
    /// an IPv6 socket there (v4-mapped), found by the one dump of the socket's own family.
    #[test]
    fn a_dual_stack_socket_has_its_ipv4_connections_in_its_own_family() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            return eprintln!("SKIPPED: no IPv6 here");
        };
        let socket = Socket::of(&listener).expect("bound");
        assert_eq!(socket.family, libc::AF_INET6 as u8);
        let port = listener.local_addr().expect("address").port();
        assert_eq!(socket.port, port);
        let Ok(client) = TcpStream::connect(("127.0.0.1", port)) else {
            return eprintln!("SKIPPED: [::] takes no IPv4 here (net.ipv6.bindv6only)");
        };
        let (served, _) = listener.accept().expect("accept");
        assert_eq!(
            accepted_sockets(socket).expect("dump"),
            HashSet::from([inode(&served)])
        );
        drop(client);
    }

    #[test]
    fn a_socket_that_is_not_an_ip_one_is_refused() {
        let (unix, _) = std::os::unix::net::UnixStream::pair().expect("pair");
        let err = Socket::of(&unix).expect_err("not IP");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn a_request_the_server_has_not_read_is_counted_as_waiting() {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let socket = Socket::of(&listener).expect("bound");
        let mut client = TcpStream::connect(listener.local_addr().expect("address")).expect("c");
        let (served, _) = listener.accept().expect("accept");
        assert_eq!(
            accepted(socket).expect("dump").get(&inode(&served)),
            Some(&0)
        );
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let unread = (0..100).find_map(|_| {
            let found = accepted(socket)
                .expect("dump")
                .get(&inode(&served))
                .copied();
            std::thread::sleep(std::time::Duration::from_millis(10));
            found.filter(|n| *n > 0)
        });
        assert_eq!(unread, Some(18), "the request's bytes, unread");
        drop(served);
    }

    #[test]
    fn an_error_message_ends_the_dump_with_its_code() {
        let mut message = vec![0u8; HEADER + 4];
        message[0..4].copy_from_slice(&((HEADER + 4) as u32).to_ne_bytes());
        message[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        message[HEADER..].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        let err = parse(&message, 80, &mut HashMap::new()).expect_err("an error");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert!(parse(&message[..10], 80, &mut HashMap::new()).is_ok_and(|done| !done));
    }
}
