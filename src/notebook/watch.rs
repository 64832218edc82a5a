//! Noticing that a notebook file changed ([`AppBuilder::watch`](crate::AppBuilder::watch)):
//! its length, modification time and inode (editors that save by renaming a new file over the
//! old one change only that), polled every second, as marimo polls without `watchdog`.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What is compared between two looks at a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// The file's stamp now; `None` if it cannot be read (deleted, being replaced).
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

/// Resolves once `path` exists with another stamp than `since`. A file that is missing is no
/// change yet: it may be in the middle of being replaced.
pub(crate) async fn changed(path: &Path, since: Option<Stamp>) {
    loop {
        tokio::time::sleep(POLL).await;
        let owned = path.to_owned();
        let now = tokio::task::spawn_blocking(move || stamp(&owned))
            .await
            .ok()
            .flatten();
        if now.is_some() && now != since {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rewrite_is_a_change_and_a_missing_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nb.py");
        std::fs::write(&file, "a").unwrap();
        let before = stamp(&file);
        assert!(before.is_some());
        assert_eq!(stamp(&file), before, "nothing changed");

        let watching = tokio::spawn({
            let file = file.clone();
            async move { changed(&file, before).await }
        });
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(POLL * 2).await;
        assert!(!watching.is_finished(), "a missing file is not a change");
        // Saved by renaming a new file over the old one, same length.
        let new = dir.path().join("nb.py.new");
        std::fs::write(&new, "b").unwrap();
        std::fs::rename(&new, &file).unwrap();
        tokio::time::timeout(POLL * 3, watching)
            .await
            .expect("the new file is noticed")
            .unwrap();
    }
}
