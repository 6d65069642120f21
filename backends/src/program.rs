//! Finding the program to run, the way `execvp` would, but before forking.
//!
//! Looking the program up first turns the two common mistakes into distinct, clear errors
//! ("not found" versus "found but not executable") instead of a bare `ENOENT`/`EACCES` from a
//! child that already exists.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::SpawnError;

/// `PATH` used when the environment has none, as `execvp` does.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Resolves `program` to the file that would be executed.
///
/// A program containing `/` is taken as a path; otherwise each directory of `path_var` (or a
/// default `PATH`) is tried in order and the first executable regular file wins.
pub(crate) fn resolve_program(
    program: &OsStr,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, SpawnError> {
    let shown = || program.to_string_lossy().into_owned();
    if program.is_empty() {
        return Err(SpawnError::NotFound { program: shown() });
    }
    if program.as_bytes().contains(&b'/') {
        let path = Path::new(program);
        return match candidate(path) {
            Candidate::Executable => Ok(path.to_path_buf()),
            Candidate::NotExecutable => Err(SpawnError::NotExecutable { program: shown() }),
            Candidate::Missing => Err(SpawnError::NotFound { program: shown() }),
        };
    }
    let path_var: OsString = path_var.map_or_else(|| DEFAULT_PATH.into(), OsStr::to_os_string);
    let mut saw_non_executable = false;
    for dir in std::env::split_paths(&path_var) {
        // An empty PATH entry means the current directory, as for execvp.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let path = dir.join(program);
        match candidate(&path) {
            Candidate::Executable => return Ok(path),
            Candidate::NotExecutable => saw_non_executable = true,
            Candidate::Missing => {}
        }
    }
    if saw_non_executable {
        Err(SpawnError::NotExecutable { program: shown() })
    } else {
        Err(SpawnError::NotFound { program: shown() })
    }
}

enum Candidate {
    Executable,
    NotExecutable,
    Missing,
}

fn candidate(path: &Path) -> Candidate {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
            Candidate::Executable
        }
        Ok(_) => Candidate::NotExecutable,
        Err(_) => Candidate::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_in_path() {
        let found = resolve_program(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        )
        .expect("sh is installed");
        assert!(found.ends_with("sh"), "{found:?}");
    }

    #[test]
    fn missing_program_is_not_found() {
        let err = resolve_program(OsStr::new("respawn-no-such-program"), None).unwrap_err();
        assert!(
            matches!(err, SpawnError::NotFound { ref program } if program == "respawn-no-such-program")
        );
        let err = resolve_program(OsStr::new(""), None).unwrap_err();
        assert!(matches!(err, SpawnError::NotFound { .. }));
    }

    #[test]
    fn directory_or_plain_file_is_not_executable() {
        let err = resolve_program(OsStr::new("/tmp"), None).unwrap_err();
        assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");
        let err = resolve_program(OsStr::new("passwd"), Some(OsStr::new("/etc"))).unwrap_err();
        assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");
    }
}
