//! Secrets an instance reads: opened through the daemon's [`SecretSource`] only when the
//! process starts (the instance record on disk names them, never holds them), handed
//! over as environment variables or as files.
//!
//! Files are written with mode 0400 under the agent's secrets directory — on tmpfs
//! (`/run`, else `/dev/shm`), so they never reach a disk — one directory per instance and
//! target directory. The process gets a private mount namespace in which each target
//! directory (`/run/secrets`) is that instance's own directory, bind-mounted: another
//! instance, or the host, sees something else there. This needs the agent to run as
//! root, as `holdfast up` does in production; otherwise the start fails and says why.
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::types::{InstanceSpec, SecretTarget};

/// Opens secret values for the agent (the daemon holds the sealed versions and the key).
pub trait SecretSource: Send + Sync {
    /// The value of `secret` (`project/name`) at `version`.
    fn open(&self, secret: &str, version: u64) -> Result<Zeroizing<Vec<u8>>, String>;
}

/// A shared [`SecretSource`].
pub type SharedSecretSource = Arc<dyn SecretSource>;

/// A file name and its content.
type Named = (String, Zeroizing<Vec<u8>>);

/// What a start needs: secret env values and the bind mounts of the target directories.
#[derive(Default)]
pub(crate) struct Prepared {
    pub env: Vec<(String, Zeroizing<Vec<u8>>)>,
    /// (instance directory, target directory), as C strings made before the fork.
    pub mounts: Vec<(CString, CString)>,
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

// `f_type`'s width differs between targets (i64 here, i32 on 32-bit ARM).
#[allow(clippy::unnecessary_cast)]
fn is_tmpfs(path: &Path) -> bool {
    rustix::fs::statfs(path).map(|s| s.f_type as i64 == TMPFS_MAGIC).unwrap_or(false)
}

/// Where this agent keeps secret files: `/run/holdfast/<name>` when `/run` is tmpfs and
/// writable, else `/dev/shm/<name>-secrets`, else `None` (nowhere that stays off disk).
pub(crate) fn default_root(cgroup_name: &str) -> Option<PathBuf> {
    let run = Path::new("/run");
    let run_ok = is_tmpfs(run) && rustix::fs::access(run, rustix::fs::Access::WRITE_OK).is_ok();
    if run_ok {
        return Some(run.join("holdfast").join(cgroup_name));
    }
    let shm = Path::new("/dev/shm");
    is_tmpfs(shm).then(|| shm.join(format!("{cgroup_name}-secrets")))
}

/// The instance's own secrets directory.
pub(crate) fn instance_dir(root: &Path, stem: &str) -> PathBuf {
    root.join(stem)
}

/// Opens every secret of `spec` and lays out its files under `dir` (replacing what a
/// previous start left).
pub(crate) fn prepare(
    spec: &InstanceSpec,
    source: Option<&SharedSecretSource>,
    root: Option<&Path>,
    stem: &str,
) -> Result<Prepared, String> {
    let mut out = Prepared::default();
    if spec.secrets.is_empty() {
        return Ok(out);
    }
    let source = source.ok_or("this agent has no secret source; the instance reads secrets")?;
    let mut by_dir: BTreeMap<PathBuf, Vec<Named>> = BTreeMap::new();
    for use_ in &spec.secrets {
        let value = source
            .open(&use_.secret, use_.version)
            .map_err(|e| format!("cannot open secret {} version {}: {e}", use_.secret, use_.version))?;
        match &use_.target {
            SecretTarget::Env(name) => out.env.push((name.clone(), value)),
            SecretTarget::File(path) => {
                let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
                    return Err(format!("secret file path {} has no directory", path.display()));
                };
                by_dir.entry(dir.to_path_buf()).or_default().push((file.to_string_lossy().into_owned(), value));
            }
        }
    }
    if by_dir.is_empty() {
        return Ok(out);
    }
    if !rustix::process::geteuid().is_root() {
        return Err("secret files need holdfast to run as root (each instance gets its own view of the file's directory); deliver the secret as an env value instead, or run holdfast as root".into());
    }
    if spec.run_as.is_some() {
        return Err("secret files are not supported for instances run as another OS user".into());
    }
    let root = root.ok_or("no tmpfs for secret files (/run and /dev/shm are not tmpfs here)")?;
    let base = instance_dir(root, stem);
    let _ = std::fs::remove_dir_all(&base);
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    for (i, (target, files)) in by_dir.into_iter().enumerate() {
        let dir = base.join(format!("d{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        for (name, value) in files {
            let path = dir.join(&name);
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(|e| io("cannot write", &path, e))?;
            f.write_all(&value).map_err(|e| io("cannot write", &path, e))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))
            .map_err(|e| io("cannot chmod", &dir, e))?;
        // The mount point must exist on the host; an empty directory is all it gets.
        std::fs::create_dir_all(&target).map_err(|e| io("cannot create mount point", &target, e))?;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{} has a NUL", p.display()));
        out.mounts.push((c(&dir)?, c(&target)?));
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700));
    Ok(out)
}

/// Removes an instance's secret files (after it stopped for good).
pub(crate) fn remove(root: Option<&Path>, stem: &str) {
    if let Some(root) = root {
        let dir = instance_dir(root, stem);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an instance's secret files");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{InstanceId, SecretUse};

    struct Fixed;
    impl SecretSource for Fixed {
        fn open(&self, secret: &str, version: u64) -> Result<Zeroizing<Vec<u8>>, String> {
            if secret == "p/missing" {
                return Err("no such secret".into());
            }
            Ok(Zeroizing::new(format!("{secret}@{version}").into_bytes()))
        }
    }

    fn spec(uses: &[(&str, SecretTarget)]) -> InstanceSpec {
        let mut s = InstanceSpec::new(InstanceId::new("web", 0), vec!["x".into()]);
        s.secrets =
            uses.iter().map(|(n, t)| SecretUse { secret: n.to_string(), version: 2, target: t.clone() }).collect();
        s
    }

    #[test]
    fn env_values_are_opened_at_their_version() {
        let src: SharedSecretSource = Arc::new(Fixed);
        let p = prepare(&spec(&[("p/key", SecretTarget::Env("KEY".into()))]), Some(&src), None, "web-0").unwrap();
        assert_eq!(p.env.len(), 1);
        assert_eq!((p.env[0].0.as_str(), &p.env[0].1[..]), ("KEY", b"p/key@2".as_slice()));
        assert!(p.mounts.is_empty());
    }

    #[test]
    fn failures_name_the_secret() {
        let src: SharedSecretSource = Arc::new(Fixed);
        let e =
            prepare(&spec(&[("p/missing", SecretTarget::Env("K".into()))]), Some(&src), None, "web-0").err().unwrap();
        assert_eq!(e, "cannot open secret p/missing version 2: no such secret");
        let e = prepare(&spec(&[("p/key", SecretTarget::Env("K".into()))]), None, None, "web-0").err().unwrap();
        assert!(e.contains("no secret source"), "{e}");
    }

    #[test]
    fn files_are_laid_out_per_directory() {
        if !rustix::process::geteuid().is_root() {
            let src: SharedSecretSource = Arc::new(Fixed);
            let e =
                prepare(&spec(&[("p/key", SecretTarget::File("/x/k".into()))]), Some(&src), None, "w").err().unwrap();
            assert!(e.contains("need holdfast to run as root"), "{e}");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let t = |n: &str| SecretTarget::File(target.path().join("s").join(n));
        let src: SharedSecretSource = Arc::new(Fixed);
        let p = prepare(&spec(&[("p/a", t("a")), ("p/b", t("b"))]), Some(&src), Some(root.path()), "web-0").unwrap();
        assert_eq!(p.mounts.len(), 1);
        let dir = root.path().join("web-0/d0");
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"p/a@2");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("b")).unwrap().permissions().mode() & 0o777, 0o400);
        assert!(target.path().join("s").is_dir(), "the mount point exists");
        remove(Some(root.path()), "web-0");
        assert!(!root.path().join("web-0").exists());
    }
}
