//! Starting a worker: fork, then in the child only async-signal-safe calls (everything is
//! prepared before the fork) and exec. The child gets the socket as fd 3 with `LISTEN_PID` set to
//! its own pid, an empty signal mask, every signal at its default, a signal when the launcher dies, a
//! process group of its own (so that a worker is stopped whole, whatever it runs under: a shell
//! that does not `exec`, `npm start`), and a higher `oom_score_adj` than the launcher's (so that
//! the kernel's OOM killer takes a worker before the supervisor).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::host::Snapshot;
use crate::servers::LISTEN_FD;

/// Why a command cannot be run, with the shell's exit status for it.
#[derive(Debug)]
pub struct NotRunnable {
    pub message: String,
    pub exit_code: u8,
}

/// The program's full path: as given when it holds a `/`, else searched in `PATH`.
pub fn resolve(
    program: &OsStr,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, NotRunnable> {
    let shown = program.to_string_lossy();
    let candidate = if program.as_bytes().contains(&b'/') {
        cwd.join(program)
    } else {
        match which::which_in(program, path_var, cwd) {
            Ok(found) => return Ok(found),
            Err(_) => {
                // A file of that name that is not executable is 126, as in a shell.
                let dirs = std::env::split_paths(path_var.unwrap_or_default());
                match dirs.map(|d| d.join(program)).find(|p| p.is_file()) {
                    Some(found) => found,
                    None => {
                        return Err(NotRunnable {
                            message: format!("{shown}: command not found in PATH"),
                            exit_code: 127,
                        })
                    }
                }
            }
        }
    };
    let metadata = std::fs::metadata(&candidate).map_err(|err| NotRunnable {
        message: format!("{shown}: {err}"),
        exit_code: 127,
    })?;
    let executable = metadata.is_file() && metadata.permissions().mode() & 0o111 != 0;
    if executable && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
        Ok(candidate)
    } else {
        Err(NotRunnable {
            message: format!("{shown}: not an executable file ({})", candidate.display()),
            exit_code: 126,
        })
    }
}

/// A command ready to be started any number of times.
pub struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// `LISTEN_PID=` followed by room for the digits, filled in by the child.
    listen_pid: Option<Vec<u8>>,
    listener: Option<RawFd>,
    /// What the child gets when the launcher dies (`PR_SET_PDEATHSIG`).
    death_signal: Signal,
    /// The child's `oom_score_adj`, as the digits to write, and the file it writes them to;
    /// None if the launcher's is unreadable.
    oom_score_adj: Option<(CString, Vec<u8>)>,
}

/// How much higher a worker's `oom_score_adj` is than the launcher's (any process may raise its
/// own): on a 512 MB dyno the kernel then counts ~150 MB more against each worker than against
/// the launcher, which holds ~3 MB.
pub const OOM_SCORE_ADJ_RAISE: i32 = 300;

/// A worker's `oom_score_adj` for a launcher whose own is `own` (the kernel's range is -1000 to
/// 1000).
pub fn worker_oom_score_adj(own: i32) -> i32 {
    own.saturating_add(OOM_SCORE_ADJ_RAISE).clamp(-1000, 1000)
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

impl Prepared {
    /// `env` is the children's whole environment, without `LISTEN_*` (added here when there is a
    /// listener).
    pub fn new(
        path: &Path,
        argv: &[OsString],
        env: &[(OsString, OsString)],
        listener: Option<RawFd>,
        death_signal: Signal,
    ) -> Result<Prepared, String> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| "an argument or variable holds a NUL byte".to_owned())
        };
        let argv = argv
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut envp = Vec::with_capacity(env.len() + 2);
        for (key, value) in env {
            envp.push(c(&[key.as_bytes(), b"=", value.as_bytes()].concat())?);
        }
        if listener.is_some() {
            envp.push(c(b"LISTEN_FDS=1")?);
            envp.push(c(b"LISTEN_FDNAMES=web")?);
        }
        let listen_pid = listener.map(|_| {
            let mut buffer = LISTEN_PID_PREFIX.to_vec();
            buffer.resize(LISTEN_PID_PREFIX.len() + 24, 0);
            buffer
        });
        let file = Snapshot::proc_file("self/oom_score_adj");
        let own = crate::files::read_text(&file, 64).ok();
        let own: Option<i32> = own.and_then(|text| text.trim().parse().ok());
        let digits = own.map(|own| worker_oom_score_adj(own).to_string().into_bytes());
        let oom_score_adj = match digits {
            Some(digits) => Some((c(file.as_os_str().as_bytes())?, digits)),
            None => None,
        };
        Ok(Prepared {
            path: c(path.as_os_str().as_bytes())?,
            argv,
            envp,
            listen_pid,
            listener,
            death_signal,
            oom_score_adj,
        })
    }

    /// Forks and execs. The child runs only async-signal-safe calls on memory prepared here, which
    /// is what makes fork safe in a process with more than one thread (the log writer's).
    pub fn spawn(&mut self) -> nix::Result<Pid> {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        let listen_pid = self.listen_pid.as_mut().map(|b| b.as_mut_ptr());
        if let Some(buffer) = listen_pid {
            envp.push(buffer as *const libc::c_char);
        }
        envp.push(std::ptr::null());
        let parent = nix::unistd::getpid().as_raw();
        // SAFETY: the child of a process with one thread besides (the log writer's) calls only
        // async-signal-safe functions on memory allocated before the fork, then execs or _exits.
        match unsafe { libc::fork() } {
            -1 => Err(nix::errno::Errno::last()),
            0 => unsafe {
                child(
                    Inherited {
                        parent,
                        death_signal: self.death_signal as libc::c_int,
                        listener: self.listener,
                        listen_pid,
                        oom_score_adj: self
                            .oom_score_adj
                            .as_ref()
                            .map(|(file, digits)| (file.as_c_str(), digits.as_slice())),
                    },
                    self.path.as_ptr(),
                    &argv,
                    &envp,
                )
            },
            pid => {
                // The child does the same; whichever runs first, the group exists before the
                // launcher signals it. EACCES once the child has exec'd is fine: it did it.
                // SAFETY: setpgid has no memory effects.
                unsafe { libc::setpgid(pid, pid) };
                Ok(Pid::from_raw(pid))
            }
        }
    }
}

/// What the child sets up before exec, all prepared before the fork.
struct Inherited<'a> {
    parent: libc::pid_t,
    death_signal: libc::c_int,
    listener: Option<RawFd>,
    listen_pid: Option<*mut u8>,
    oom_score_adj: Option<(&'a std::ffi::CStr, &'a [u8])>,
}

/// In the forked child. Never returns.
unsafe fn child(
    inherited: Inherited<'_>,
    path: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let Inherited {
        parent,
        death_signal,
        listener,
        listen_pid,
        oom_score_adj,
    } = inherited;
    // Its own process group: the launcher stops the worker and whatever it started as one.
    libc::setpgid(0, 0);
    if let Some((file, digits)) = oom_score_adj {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, digits.as_ptr().cast(), digits.len());
            libc::close(fd);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    // Every signal at its default: Rust ignores SIGPIPE, and an ignored SIGINT or SIGQUIT the
    // launcher was started with would make the workers deaf to a fast shutdown (the standard
    // signals; SIGKILL and SIGSTOP refuse, as they always have their default).
    for signal in 1..32 {
        libc::signal(signal, libc::SIG_DFL);
    }
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        death_signal as libc::c_ulong,
        0,
        0,
        0,
    );
    if libc::getppid() != parent {
        // The launcher died before the line above took effect.
        libc::_exit(1);
    }
    if let Some(fd) = listener {
        let ok = if fd == LISTEN_FD {
            libc::fcntl(fd, libc::F_SETFD, 0) == 0
        } else {
            libc::dup2(fd, LISTEN_FD) == LISTEN_FD
        };
        if !ok {
            fail(b"launcher: cannot pass the socket as fd 3\n", 126);
        }
    }
    if let Some(buffer) = listen_pid {
        write_digits(buffer.add(LISTEN_PID_PREFIX.len()), libc::getpid());
    }
    libc::execve(path, argv.as_ptr(), envp.as_ptr());
    let code = match *libc::__errno_location() {
        libc::ENOENT => 127,
        _ => 126,
    };
    fail(b"launcher: exec failed for the worker's command\n", code)
}

unsafe fn fail(message: &[u8], code: i32) -> ! {
    libc::write(2, message.as_ptr().cast(), message.len());
    libc::_exit(code)
}

/// Writes `n` in decimal followed by a NUL at `at` (room for 24 bytes), without allocating.
unsafe fn write_digits(at: *mut u8, n: libc::pid_t) {
    let mut digits = [0u8; 12];
    let mut len = 0;
    let mut rest = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for i in 0..len {
        *at.add(i) = digits[len - 1 - i];
    }
    *at.add(len) = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_like_a_shell() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "data").expect("write");
        let path_var = OsString::from(format!("/usr/bin:/bin:{}", dir.path().display()));
        let cwd = Path::new("/");
        assert!(resolve(OsStr::new("sh"), Some(&path_var), cwd).is_ok());
        let missing = resolve(OsStr::new("no-such-cmd"), Some(&path_var), cwd).expect_err("127");
        assert_eq!(missing.exit_code, 127);
        assert_eq!(
            resolve(OsStr::new("plain"), Some(&path_var), cwd)
                .expect_err("126")
                .exit_code,
            126
        );
        assert_eq!(
            resolve(plain.as_os_str(), None, cwd)
                .expect_err("126")
                .exit_code,
            126
        );
        assert_eq!(
            resolve(dir.path().as_os_str(), None, cwd)
                .expect_err("dir")
                .exit_code,
            126
        );
        assert_eq!(
            resolve(OsStr::new("./nothing"), None, dir.path())
                .expect_err("127")
                .exit_code,
            127
        );
    }

    #[test]
    fn workers_are_raised_above_the_launcher_within_the_kernels_range() {
        assert_eq!(worker_oom_score_adj(0), 300);
        assert_eq!(worker_oom_score_adj(-500), -200);
        assert_eq!(worker_oom_score_adj(900), 1000);
        assert_eq!(worker_oom_score_adj(-1000), -700);
    }

    #[test]
    fn digits_are_written_in_place() {
        let mut buffer = [0xffu8; 24];
        unsafe { write_digits(buffer.as_mut_ptr(), 4_194_304) };
        assert_eq!(&buffer[..8], b"4194304\0");
        unsafe { write_digits(buffer.as_mut_ptr(), 7) };
        assert_eq!(&buffer[..2], b"7\0");
    }
}
