//! Cgroup v2 containment: one cgroup per generation, so that the kernel, not the process tree,
//! says which processes belong to a generation, and `cgroup.kill` ends them all at once.
//!
//! A process cannot leave its cgroup by itself the way it leaves a process group (`setsid`) or
//! the process tree (a double fork): every process the server starts, however it detaches, is
//! born in the server's cgroup and stays there. This is what systemd does for a unit.
//!
//! Where: a child of respawn's own cgroup, found from `/proc/self/cgroup` and the cgroup2 mount
//! in `/proc/self/mountinfo` (never an assumed path: hosts mount it at `/sys/fs/cgroup`, hybrid
//! hosts at `/sys/fs/cgroup/unified`, containers elsewhere). Each generation's cgroup is named
//! `respawn-<pid namespace>-<respawn's pid>-<server number>-gen<generation>`; the namespace and
//! the pid let a later respawn find and remove the cgroups of one that died (a pid means nothing
//! in another pid namespace, whose cgroups are left alone). No controller is enabled, so
//! respawn's own cgroup keeps its processes (the "no internal processes" rule concerns
//! controllers only).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The start of the name of every cgroup respawn creates.
pub(crate) const NAME_PREFIX: &str = "respawn-";

/// Pause between two looks at a cgroup that is being emptied.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Why respawn cannot contain its server in a cgroup here (it falls back to the guardian).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupUnavailable {
    /// No cgroup2 file system is mounted (a pure cgroup v1 host, or a container without one).
    #[error("no cgroup2 hierarchy is mounted (none in /proc/self/mountinfo)")]
    NoHierarchy,
    /// `/proc/self/cgroup` has no cgroup v2 line (`0::/path`).
    #[error("respawn's own cgroup v2 path is not in /proc/self/cgroup")]
    NotInHierarchy,
    /// respawn's cgroup is outside every cgroup2 mount visible here.
    #[error("respawn's own cgroup {path} is not under any mounted cgroup2 hierarchy")]
    NotMounted {
        /// respawn's cgroup v2 path.
        path: String,
    },
    /// respawn may not create cgroups or move processes there (not root, and no delegation).
    #[error("cannot create cgroups under {dir}: {reason}")]
    NotWritable {
        /// respawn's own cgroup directory.
        dir: PathBuf,
        /// What the kernel said.
        reason: String,
    },
}

/// The name every cgroup of this process starts with: the prefix, our pid namespace's inode
/// number and our pid (`respawn-4026531836-1234-`).
pub(crate) fn own_name_prefix() -> String {
    format!(
        "{NAME_PREFIX}{}-{}-",
        pid_namespace().unwrap_or(0),
        std::process::id()
    )
}

/// The inode number of our pid namespace (`/proc/self/ns/pid` → `pid:[4026531836]`).
fn pid_namespace() -> Option<u64> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// Where respawn would create its generations' cgroups (its own cgroup2 directory), or why it
/// cannot here. Creates and removes a probe cgroup to find out.
pub fn cgroup_parent() -> Result<PathBuf, CgroupUnavailable> {
    CgroupParent::discover().map(|parent| parent.dir)
}

/// One cgroup2 mount: the hierarchy's path at the mount point, and the mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cgroup2Mount {
    root: String,
    mount_point: PathBuf,
}

/// Undoes the octal escapes of `/proc/self/mountinfo` (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'\\')
            .then(|| bytes.get(at + 1..at + 4))
            .flatten()
            .filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .map(|digits| {
                digits
                    .iter()
                    .fold(0u16, |value, d| value * 8 + u16::from(d - b'0'))
            })
            .and_then(|value| u8::try_from(value).ok());
        match escaped {
            Some(value) => {
                out.push(value);
                at += 4;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 mounts listed in mountinfo text.
fn parse_mountinfo(text: &str) -> Vec<Cgroup2Mount> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount_point options [optional...] - fstype source super
            let (before, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = before.split_whitespace();
            let root = fields.nth(3)?;
            let mount_point = fields.next()?;
            Some(Cgroup2Mount {
                root: unescape(root),
                mount_point: PathBuf::from(unescape(mount_point)),
            })
        })
        .collect()
}

/// respawn's cgroup v2 path from `/proc/self/cgroup` text (the `0::/path` line).
fn parse_own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().to_owned())
}

/// The directory of cgroup `path` under the first mount whose hierarchy root contains it.
fn directory_of(mounts: &[Cgroup2Mount], path: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|mount| {
        let root = mount.root.trim_end_matches('/');
        let rest = if root.is_empty() {
            path
        } else {
            let rest = path.strip_prefix(root)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let rest = rest.trim_start_matches('/');
        Some(if rest.is_empty() {
            mount.mount_point.clone()
        } else {
            mount.mount_point.join(rest)
        })
    })
}

/// respawn's own cgroup directory, under which the generations' cgroups are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupParent {
    dir: PathBuf,
}

impl CgroupParent {
    /// Finds respawn's own cgroup2 directory and checks that cgroups can be created there and
    /// processes moved into them.
    pub(crate) fn discover() -> Result<Self, CgroupUnavailable> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|_| CgroupUnavailable::NoHierarchy)?;
        let mounts = parse_mountinfo(&mountinfo);
        if mounts.is_empty() {
            return Err(CgroupUnavailable::NoHierarchy);
        }
        let own = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| parse_own_cgroup(&text))
            .ok_or(CgroupUnavailable::NotInHierarchy)?;
        let dir = directory_of(&mounts, &own)
            .filter(|dir| dir.join("cgroup.procs").exists())
            .ok_or_else(|| CgroupUnavailable::NotMounted { path: own.clone() })?;
        let parent = Self { dir };
        parent.probe()?;
        Ok(parent)
    }

    /// Creates and removes a cgroup, and checks that our own `cgroup.procs` is writable (moving a
    /// process needs write access to the common ancestor's).
    fn probe(&self) -> Result<(), CgroupUnavailable> {
        let not_writable = |err: io::Error| CgroupUnavailable::NotWritable {
            dir: self.dir.clone(),
            reason: err.to_string(),
        };
        fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .map_err(not_writable)?;
        let probe = self.dir.join(format!("{}probe", own_name_prefix()));
        match fs::create_dir(&probe) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(not_writable(err)),
        }
        fs::remove_dir(&probe).map_err(not_writable)
    }

    /// respawn's own cgroup directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the child cgroup `name` (empty: a leftover of the same name is emptied and reused).
    pub(crate) fn create(&self, name: &str) -> io::Result<Cgroup> {
        let cgroup = Cgroup {
            dir: self.dir.join(name),
        };
        match fs::create_dir(&cgroup.dir) {
            Ok(()) => Ok(cgroup),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of the same name (a reused pid): empty it and start afresh.
                cgroup.kill();
                cgroup.wait_empty(Duration::from_secs(5));
                Ok(cgroup)
            }
            Err(err) => Err(err),
        }
    }

    /// The child cgroups whose names start with `prefix`, with the rest of their names.
    pub(crate) fn children_named(&self, prefix: &str) -> Vec<(Cgroup, String)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let rest = name.strip_prefix(prefix)?.to_owned();
                Some((Cgroup { dir: entry.path() }, rest))
            })
            .collect()
    }

    /// Kills and removes the cgroups left by a respawn of our pid namespace that died without
    /// cleaning up (its pid in the name no longer runs). Returns the directories removed.
    pub(crate) fn sweep_stale(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let Some(namespace) = pid_namespace() else {
            return Vec::new();
        };
        let me = std::process::id();
        let mut removed = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some((owner_namespace, owner)) = name
                .to_str()
                .and_then(|name| name.strip_prefix(NAME_PREFIX))
                .and_then(|rest| {
                    let mut fields = rest.split('-');
                    let namespace: u64 = fields.next()?.parse().ok()?;
                    let pid: u32 = fields.next()?.parse().ok()?;
                    Some((namespace, pid))
                })
            else {
                continue;
            };
            if owner_namespace != namespace
                || owner == me
                || Path::new(&format!("/proc/{owner}")).exists()
            {
                continue;
            }
            let stale = Cgroup { dir: entry.path() };
            let survivors = stale.procs();
            if !survivors.is_empty() {
                tracing::warn!(cgroup = %stale.dir.display(), pids = ?survivors,
                    "killing processes left by a respawn that died");
            }
            if stale.empty_and_remove(Duration::from_secs(5)) {
                removed.push(stale.dir);
            }
        }
        removed
    }
}

/// One generation's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// The cgroup at `dir` (which must exist for anything to work).
    pub(crate) fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a process is moved in by writing its pid (or `0` for the writer itself).
    pub(crate) fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The pids in the cgroup now (empty once it is removed).
    pub(crate) fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.procs_file())
            .map(|text| {
                text.split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the cgroup: `cgroup.kill` (Linux 5.14+) does it atomically,
    /// even for a process forking right now; without it, each listed pid gets SIGKILL.
    pub(crate) fn kill(&self) {
        let written = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
            .and_then(|mut file| file.write_all(b"1"));
        if written.is_err() {
            for pid in self.procs() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    /// Waits (sleeping, at most `bound`) until the cgroup holds no process; returns whether it
    /// is empty. Without `cgroup.kill`, processes that appear meanwhile get SIGKILL too.
    pub(crate) fn wait_empty(&self, bound: Duration) -> bool {
        let started = Instant::now();
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                return true;
            }
            if started.elapsed() >= bound {
                return false;
            }
            for pid in procs {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// SIGKILLs everything in the cgroup and removes it, waiting (sleeping, at most `bound`) for
    /// its processes to be gone and released; returns whether it was removed.
    pub(crate) fn empty_and_remove(&self, bound: Duration) -> bool {
        let started = Instant::now();
        self.kill();
        if !self.wait_empty(bound) {
            return false;
        }
        // Removal fails with EBUSY until the exited processes are fully released.
        loop {
            match self.remove() {
                Ok(()) => return true,
                Err(_) if started.elapsed() >= bound => return false,
                Err(_) => std::thread::sleep(POLL_EVERY),
            }
        }
    }

    /// Removes the (empty) cgroup; a cgroup already gone counts as removed.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match fs::remove_dir(&self.dir) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Moves the calling process out, into the parent cgroup (so that it can remove this one).
    pub(crate) fn leave(&self) -> io::Result<()> {
        let parent = self
            .dir
            .parent()
            .ok_or_else(|| io::Error::other("a cgroup without a parent"))?;
        fs::OpenOptions::new()
            .write(true)
            .open(parent.join("cgroup.procs"))?
            .write_all(b"0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_cgroup2_mount_among_v1_ones() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(
            mounts,
            vec![Cgroup2Mount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/unified".into()
            }]
        );
        assert!(parse_mountinfo("35 31 0:32 / /x rw - cgroup cgroup rw,memory\n").is_empty());
    }

    #[test]
    fn mount_points_with_escaped_spaces_are_unescaped() {
        let line = "41 31 0:38 / /mnt/my\\040cgroups rw shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(line)[0].mount_point,
            PathBuf::from("/mnt/my cgroups")
        );
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn own_cgroup_is_the_v2_line() {
        let text = "4:memory:/x\n0::/system.slice/respawn.service\n";
        assert_eq!(
            parse_own_cgroup(text).as_deref(),
            Some("/system.slice/respawn.service")
        );
        assert_eq!(parse_own_cgroup("1:cpu:/\n"), None);
    }

    #[test]
    fn the_directory_joins_the_path_below_the_mount_root() {
        let host = [Cgroup2Mount {
            root: "/".into(),
            mount_point: "/sys/fs/cgroup".into(),
        }];
        assert_eq!(
            directory_of(&host, "/system.slice/a.service"),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/a.service"))
        );
        assert_eq!(
            directory_of(&host, "/"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // A container that sees only its part of the hierarchy, mounted at its own root.
        let container = [Cgroup2Mount {
            root: "/kubepods/pod1".into(),
            mount_point: "/sys/fs/cgroup".into(),
        }];
        assert_eq!(
            directory_of(&container, "/kubepods/pod1/app"),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(directory_of(&container, "/kubepods/pod10"), None);
        assert_eq!(directory_of(&container, "/elsewhere"), None);
    }
}
