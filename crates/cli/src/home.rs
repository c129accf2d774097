//! Where coffer keeps its state, and whether a server is running on it.

use std::{
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
};

/// `--home`, else `$COFFER_HOME`, else `$XDG_DATA_HOME/coffer`, else `~/.local/share/coffer`.
pub fn resolve(flag: Option<PathBuf>) -> PathBuf {
    if let Some(h) = flag {
        return h;
    }
    if let Some(h) = std::env::var_os("COFFER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("coffer");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/coffer")
}

/// True when a `coffer server` holds the server lock of this home.
pub fn server_running(home: &Path) -> bool {
    let Ok(f) = std::fs::File::open(home.join("server.lock")) else {
        return false;
    };
    // A shared-lock attempt fails while the server holds its exclusive lock.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        false
    } else {
        true
    }
}
