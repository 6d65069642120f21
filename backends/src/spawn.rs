//! Turning a [`ServerSpec`] into a running child in its own process group.
//!
//! The child is executed from an argv (a shell only when [`ServerSpec::shell`] is set), leads a
//! new process group so that the whole tree can be signalled at once, and carries
//! `PR_SET_PDEATHSIG = SIGKILL` so that it dies with the thread that spawned it, even when
//! respawn itself is killed with SIGKILL. Grandchildren are not covered by that signal; the
//! [guardian](crate::guardian_main) and the generation's cgroup cover them. In cgroup
//! containment the child moves itself into the generation's cgroup before it executes anything,
//! so that every process it ever starts is born there.
//!
//! Its stdout and stderr are pipes of our own, read by threads (see `output.rs`), and the
//! variables of [`ServerSpec::env_remove`] (respawn's own secrets) are removed from its
//! environment.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::Stdio;

use crate::cgroup::Cgroup;
use crate::error::SpawnError;
use crate::guardian::{GUARDIAN_CGROUP_ENV, GUARDIAN_PARENT_ENV, GUARDIAN_REPORT_FD_ENV};
use crate::program::resolve_program;
use crate::spec::ServerSpec;

/// The exact argv to execute for a spec, after `{port}` substitution and PATH lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// The executable (resolved path, `sh`, or the guardian).
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<OsString>,
}

/// Replaces every `{port}` in `arg` by `port`.
pub(crate) fn substitute_port(arg: &OsStr, port: u16) -> OsString {
    const PLACEHOLDER: &[u8] = b"{port}";
    let bytes = arg.as_bytes();
    let port = port.to_string();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(port.as_bytes());
        rest = &rest[at + PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    OsString::from_vec(out)
}

/// The `PATH` the child will search: the spec's own `PATH` if it sets one, else ours.
pub(crate) fn path_for(spec: &ServerSpec) -> Option<OsString> {
    spec.env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.clone())
        .or_else(|| std::env::var_os("PATH"))
}

/// Works out what to execute for `spec`, failing early with a clear error when the program
/// cannot be found or executed.
pub(crate) fn plan_launch(spec: &ServerSpec) -> Result<Launch, SpawnError> {
    let path_var = path_for(spec);
    let args: Vec<OsString> = spec
        .args
        .iter()
        .map(|arg| substitute_port(arg, spec.port))
        .collect();
    let (program, args) = if spec.shell {
        let mut line = substitute_port(&spec.program, spec.port);
        for arg in &args {
            line.push(" ");
            line.push(arg);
        }
        let sh = resolve_program(OsStr::new("sh"), path_var.as_deref())?;
        (sh, vec![OsString::from("-c"), line])
    } else {
        let program = substitute_port(&spec.program, spec.port);
        (resolve_program(&program, path_var.as_deref())?, args)
    };
    Ok(match &spec.guardian {
        None => Launch { program, args },
        Some(guardian) => {
            let mut full = guardian.args.clone();
            full.push(OsString::from("--"));
            full.push(program.into_os_string());
            full.extend(args);
            Launch {
                program: guardian.program.clone(),
                args: full,
            }
        }
    })
}

/// A pipe's two ends, both close-on-exec, neither one a standard stream's number.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: `pipe2` writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe2 and belong to no one else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd`, moved to a number above 2 if it is one of the standard streams' (possible when
/// respawn runs with a closed stdin), so that setting up the child's stdio cannot clobber it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd or -1.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` is a fresh fd owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// A started child with the read ends of its output pipes.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// The group leader (the guardian, or the server itself).
    pub(crate) child: tokio::process::Child,
    /// The read end of its stdout.
    pub(crate) stdout: File,
    /// The read end of its stderr.
    pub(crate) stderr: File,
    /// With a guardian: the read end of the pipe on which it reports the server's pid.
    pub(crate) report: Option<File>,
}

/// Spawns `launch` as the leader of a new process group, with stdout/stderr on pipes of ours,
/// inside `cgroup` when one is given.
///
/// Must be called from a thread that lives as long as the child should (the actix arbiter
/// thread of the [`ServerActor`](crate::ServerActor)): `PR_SET_PDEATHSIG` fires when the
/// spawning *thread* exits.
pub(crate) fn spawn_group_leader(
    spec: &ServerSpec,
    launch: &Launch,
    cgroup: Option<&Cgroup>,
) -> Result<Spawned, SpawnError> {
    let shown = || spec.program.to_string_lossy().into_owned();
    let io_error = |source: io::Error| SpawnError::Io {
        program: shown(),
        source,
    };
    let (stdout_read, stdout_write) = pipe().map_err(io_error)?;
    let (stderr_read, stderr_write) = pipe().map_err(io_error)?;
    let report = match spec.guardian {
        Some(_) => Some(pipe().map_err(io_error)?),
        None => None,
    };
    let cgroup_procs = cgroup
        .map(|cgroup| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(cgroup.procs_file())
                .map_err(|source| SpawnError::Cgroup {
                    dir: cgroup.dir().to_path_buf(),
                    source,
                })
        })
        .transpose()?;

    let mut command = tokio::process::Command::new(&launch.program);
    command.args(&launch.args);
    for name in &spec.env_remove {
        command.env_remove(name);
    }
    command
        .envs(spec.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
        .env("PORT", spec.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_write))
        .stderr(Stdio::from(stderr_write))
        .process_group(0)
        .kill_on_drop(false);
    let parent = std::process::id();
    if spec.guardian.is_some() {
        command.env(GUARDIAN_PARENT_ENV, parent.to_string());
        if let Some(cgroup) = cgroup {
            command.env(GUARDIAN_CGROUP_ENV, cgroup.dir());
        }
    }
    let report_write: RawFd = match &report {
        Some((_, write)) => {
            command.env(GUARDIAN_REPORT_FD_ENV, write.as_raw_fd().to_string());
            write.as_raw_fd()
        }
        None => -1,
    };
    let cgroup_fd: RawFd = cgroup_procs.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let parent = parent as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // functions may be called. It calls only `write`, `fcntl`, `prctl` and `getppid` (plain
    // system calls) on fds that stay open until `spawn` returns, and builds `io::Error` values
    // from an errno without allocating.
    unsafe {
        command.pre_exec(move || {
            if cgroup_fd >= 0 && libc::write(cgroup_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            if report_write >= 0 && libc::fcntl(report_write, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal will ever come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| {
        // The program was found executable just before (`plan_launch`), so in cgroup
        // containment these errors come from moving the child into its cgroup.
        if let Some(cgroup) = cgroup {
            if matches!(
                source.raw_os_error(),
                Some(
                    libc::EACCES
                        | libc::EPERM
                        | libc::EBUSY
                        | libc::EOPNOTSUPP
                        | libc::ENODEV
                        | libc::EINVAL
                )
            ) {
                return SpawnError::Cgroup {
                    dir: cgroup.dir().to_path_buf(),
                    source,
                };
            }
        }
        match source.kind() {
            io::ErrorKind::NotFound => SpawnError::NotFound { program: shown() },
            io::ErrorKind::PermissionDenied => SpawnError::NotExecutable { program: shown() },
            _ => SpawnError::Io {
                program: shown(),
                source,
            },
        }
    })?;
    // Our copies of the write ends close here (the command is dropped), so that the readers see
    // end-of-file once the child and everything that inherited them are gone.
    drop(command);
    Ok(Spawned {
        child,
        stdout: File::from(stdout_read),
        stderr: File::from(stderr_read),
        report: report.map(|(read, _)| File::from(read)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GuardianLaunch;

    #[test]
    fn port_placeholder_is_replaced_everywhere() {
        assert_eq!(
            substitute_port(OsStr::new("--port={port}"), 8123),
            "--port=8123"
        );
        assert_eq!(substitute_port(OsStr::new("{port}:{port}"), 1), "1:1");
        assert_eq!(substitute_port(OsStr::new("{por}"), 1), "{por}");
    }

    #[test]
    fn plain_launch_resolves_program_and_substitutes_args() {
        let spec = ServerSpec::new("t", "sleep", ["{port}"], 4321);
        let launch = plan_launch(&spec).expect("sleep is installed");
        assert!(launch.program.ends_with("sleep"));
        assert_eq!(launch.args, vec![OsString::from("4321")]);
    }

    #[test]
    fn shell_launch_joins_a_line() {
        let mut spec = ServerSpec::new("t", "echo", ["$PORT", "{port}"], 99);
        spec.shell = true;
        let launch = plan_launch(&spec).expect("sh is installed");
        assert!(launch.program.ends_with("sh"));
        assert_eq!(
            launch.args,
            vec![OsString::from("-c"), OsString::from("echo $PORT 99")]
        );
    }

    #[test]
    fn guardian_launch_wraps_the_resolved_argv() {
        let mut spec = ServerSpec::new("t", "sleep", ["30"], 0);
        spec.guardian = Some(GuardianLaunch {
            program: PathBuf::from("/usr/bin/respawn"),
            args: vec![OsString::from("__guardian")],
        });
        let launch = plan_launch(&spec).expect("sleep is installed");
        assert_eq!(launch.program, PathBuf::from("/usr/bin/respawn"));
        assert_eq!(launch.args[0], "__guardian");
        assert_eq!(launch.args[1], "--");
        assert!(Path::new(&launch.args[2]).ends_with("sleep"));
        assert_eq!(launch.args[3], "30");
    }

    use std::path::Path;
}
