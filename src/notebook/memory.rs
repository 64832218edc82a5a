//! The memory cap of notebook backends ([`AppBuilder::memory_limit`](crate::AppBuilder::memory_limit)).
//!
//! The launcher always sets `RLIMIT_DATA` to the limit in its own process (the processes it
//! starts inherit it): an allocation past it fails with `MemoryError` instead of taking the
//! machine's memory. In run mode, where every kernel is a thread of the backend, the launcher
//! treats that `MemoryError` as fatal for the backend: it tells the open pages to reload,
//! answers new requests `503` marked with [`STATE_HEADER`] (the gateway shows its own page
//! instead), and exits with [`EXIT_OUT_OF_MEMORY`]. The supervisor recognises the status,
//! counts and logs the event, and restarts the backend.
//!
//! Where this process may create cgroup v2 groups with the memory controller (its own group
//! hands `memory` to its children: `cgroup.subtree_control`), each start of a backend also gets
//! its own group, `marimo-rs-<gateway pid>-<socket>`, with `memory.max` set to the limit: it
//! counts the resident memory of every process of the backend together (the editor's kernel
//! processes too). Past it the kernel's OOM killer ends the whole group, which the supervisor
//! reads in the group's `memory.events`. The group is removed once the backend is gone.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use http::HeaderName;

/// The launcher's exit status after a `MemoryError` made it stop (see the module docs).
pub(crate) const EXIT_OUT_OF_MEMORY: i32 = 86;

/// Marks a backend's own `503` answers while it stops for lack of memory; the gateway answers
/// them with its own page.
pub(crate) const STATE_HEADER: HeaderName = HeaderName::from_static("x-marimo-rs-backend-state");

/// [`STATE_HEADER`]'s value for a backend that ran out of memory.
pub(crate) const OUT_OF_MEMORY: &str = "out-of-memory";

/// How the memory cap of one service's backends is enforced: decided once, when the service
/// is built.
#[derive(Clone, Debug)]
pub(crate) struct Enforcement {
    /// The cap, in bytes.
    pub(crate) limit: u64,
    /// The cgroup v2 directory under which each backend start gets its own group; `None`:
    /// `RLIMIT_DATA` only.
    cgroups: Option<PathBuf>,
}

impl Enforcement {
    /// Looks for a cgroup v2 group this process may create children in (see the module docs)
    /// and logs what enforces `limit`.
    pub(crate) fn detect(limit: u64) -> Self {
        let cgroups = delegated_cgroup();
        match &cgroups {
            Some(dir) => tracing::info!(
                limit = %describe(limit),
                cgroup = %dir.display(),
                "notebook backends get a memory cap: a cgroup v2 group each, and RLIMIT_DATA"
            ),
            None => tracing::info!(
                limit = %describe(limit),
                "notebook backends get a memory cap: RLIMIT_DATA in each backend process (no \
                 cgroup v2 group with the memory controller can be created here)"
            ),
        }
        Self { limit, cgroups }
    }

    /// A new group for one start of the backend called `name`, if groups are in use; a group
    /// that cannot be made is logged and the start goes on with `RLIMIT_DATA` alone.
    pub(crate) fn group(&self, name: &str) -> Option<Cgroup> {
        let parent = self.cgroups.as_deref()?;
        match Cgroup::create(parent, name, self.limit) {
            Ok(group) => Some(group),
            Err(error) => {
                tracing::warn!(
                    cgroup = %parent.join(name).display(),
                    %error,
                    "cannot create the backend's cgroup; it runs with RLIMIT_DATA only"
                );
                None
            }
        }
    }

    /// What the launcher reads (`"memory"` in its configuration).
    pub(crate) fn config(&self, group: Option<&Cgroup>) -> serde_json::Value {
        serde_json::json!({
            "bytes": self.limit,
            "exit_status": EXIT_OUT_OF_MEMORY,
            // The mark of the backend's own 503s, named once here.
            "state_header": [STATE_HEADER.as_str(), OUT_OF_MEMORY],
            "cgroup": group.map(|group| &group.dir),
        })
    }

    /// What users are told: `This notebook ran out of memory (limit 2 GiB).`
    pub(crate) fn message(&self) -> String {
        format!(
            "This notebook ran out of memory (limit {}).",
            describe(self.limit)
        )
    }
}

/// Whether `response` is a backend's own answer while it stops for lack of memory.
pub(crate) fn ran_out_answer<B>(response: &http::Response<B>) -> bool {
    response
        .headers()
        .get(STATE_HEADER)
        .is_some_and(|value| value == OUT_OF_MEMORY)
}

/// Whether a backend that ended with `status` ran out of memory: the launcher's own status,
/// or the OOM killer in its group.
pub(crate) fn ran_out(status: &io::Result<ExitStatus>, group: Option<&Cgroup>) -> bool {
    let launcher = matches!(status, Ok(status) if status.code() == Some(EXIT_OUT_OF_MEMORY));
    launcher || group.is_some_and(Cgroup::oom_killed)
}

/// `bytes` for people, in binary units: `512 MiB`, `2 GiB`, `1.5 GiB`, `1000 bytes`.
pub(crate) fn describe(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let Some((power, unit)) = UNITS
        .iter()
        .enumerate()
        .rev()
        .map(|(i, unit)| (10 * (i as u32 + 1), unit))
        .find(|(power, _)| bytes >= 1 << power)
    else {
        return format!("{bytes} bytes");
    };
    let whole = bytes >> power;
    let tenths = ((bytes & ((1 << power) - 1)) * 10) >> power;
    if tenths == 0 {
        format!("{whole} {unit}")
    } else {
        format!("{whole}.{tenths} {unit}")
    }
}

/// One backend start's cgroup v2 group; removed when dropped (the kernel refuses while a
/// process is still in it, so a group is never taken from under a live backend).
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn create(parent: &Path, name: &str, limit: u64) -> io::Result<Self> {
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            // Left by a start whose process outlived the gateway's look: reused.
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
        let group = Self { dir };
        std::fs::write(group.dir.join("memory.max"), limit.to_string())?;
        // Swap would let a backend pass the limit unseen; kernels without swap accounting
        // have no such file, and then there is nothing to turn off.
        let _ = std::fs::write(group.dir.join("memory.swap.max"), "0");
        // A backend is its server and its kernels: one of them killed leaves the rest broken.
        let _ = std::fs::write(group.dir.join("memory.oom.group"), "1");
        Ok(group)
    }

    /// Whether the kernel's OOM killer ended a process of this group (`memory.events`).
    pub(crate) fn oom_killed(&self) -> bool {
        let events = std::fs::read_to_string(self.dir.join("memory.events")).unwrap_or_default();
        events.lines().any(|line| {
            matches!(line.split_once(' '), Some(("oom_kill" | "oom_group_kill", count)) if count.trim() != "0")
        })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// This process's cgroup v2 directory, if its `cgroup.subtree_control` hands the memory
/// controller to children and a child can be made there with a memory limit (tried with a
/// probe group, removed again).
fn delegated_cgroup() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = cgroup_dir(&own, &mounts)?;
    let controllers = std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    if !controllers.split_whitespace().any(|name| name == "memory") {
        return None;
    }
    let probe = Cgroup::create(
        &dir,
        &format!("marimo-rs-{}-probe", std::process::id()),
        u64::MAX >> 1,
    );
    probe.is_ok().then_some(dir)
}

/// The directory of this process's cgroup v2 group: its path in `/proc/self/cgroup`
/// (`0::/a/b`) under the `cgroup2` mount of `/proc/self/mountinfo`.
fn cgroup_dir(own: &str, mountinfo: &str) -> Option<PathBuf> {
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    mountinfo.lines().find_map(|line| {
        let (fields, filesystem) = line.split_once(" - ")?;
        if filesystem.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        // `id parent major:minor root mount-point …`
        let mut fields = fields.split_whitespace().skip(3);
        let (root, mount) = (fields.next()?, fields.next()?);
        let inside = path.strip_prefix(root.trim_end_matches('/'))?;
        Some(Path::new(mount).join(inside.trim_start_matches('/')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_told_in_binary_units() {
        assert_eq!(describe(2 << 30), "2 GiB");
        assert_eq!(describe(512 << 20), "512 MiB");
        assert_eq!(describe(3 << 29), "1.5 GiB");
        assert_eq!(describe(1000), "1000 bytes");
        assert_eq!(describe(1 << 40), "1 TiB");
        let enforcement = Enforcement {
            limit: 2 << 30,
            cgroups: None,
        };
        assert_eq!(
            enforcement.message(),
            "This notebook ran out of memory (limit 2 GiB)."
        );
    }

    #[test]
    fn the_own_cgroup_is_found_under_the_cgroup2_mount() {
        let mountinfo = "\
24 1 0:22 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup_dir("4:memory:/x\n0::/user.slice/gw.service\n", mountinfo),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/user.slice/gw.service"
            ))
        );
        assert_eq!(
            cgroup_dir("0::/\n", mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A container whose cgroup namespace starts at its own group.
        let namespaced = "30 29 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup_dir("0::/kubepods/pod1/app\n", namespaced),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(cgroup_dir("4:memory:/x\n", mountinfo), None, "v1 only");
        assert_eq!(
            cgroup_dir("0::/a\n", "24 1 0:22 / /x rw - cgroup c rw"),
            None
        );
    }

    /// The group's files, in a directory standing in for cgroupfs (which creates them itself).
    #[test]
    fn a_group_gets_the_limit_reports_the_oom_killer_and_goes_away() {
        let parent = tempfile::tempdir().unwrap();
        let enforcement = Enforcement {
            limit: 512 << 20,
            cgroups: Some(parent.path().to_owned()),
        };
        let group = enforcement.group("marimo-rs-1-nb0").unwrap();
        let dir = parent.path().join("marimo-rs-1-nb0");
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).unwrap(),
            (512u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.oom.group")).unwrap(),
            "1"
        );
        let config = enforcement.config(Some(&group));
        assert_eq!(config["cgroup"], dir.to_str().unwrap());
        assert_eq!(config["exit_status"], EXIT_OUT_OF_MEMORY);

        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!group.oom_killed());
        let killed: io::Result<ExitStatus> = Ok(std::os::unix::process::ExitStatusExt::from_raw(9));
        assert!(!ran_out(&killed, Some(&group)));
        std::fs::write(dir.join("memory.events"), "oom 2\noom_kill 1\n").unwrap();
        assert!(ran_out(&killed, Some(&group)));
        let launcher: io::Result<ExitStatus> = Ok(std::os::unix::process::ExitStatusExt::from_raw(
            EXIT_OUT_OF_MEMORY << 8,
        ));
        assert!(ran_out(&launcher, None));

        // cgroupfs removes a group's files with it; a plain directory needs them gone first.
        for file in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
        drop(group);
        assert!(!dir.exists(), "the group is removed with its handle");
    }
}
