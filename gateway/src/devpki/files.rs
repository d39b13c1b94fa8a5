//! File and port helpers of the dev federation.

use super::DevPkiError;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;

/// Writes `contents` to `path`; `private` files get mode 0600 from creation
/// on (never world-readable, not even briefly).
pub(crate) fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), DevPkiError> {
    let err = |source| DevPkiError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(path).map_err(err)?;
    // The mode above applies only to a new file: an existing one being
    // replaced (`--force`) is narrowed before the key is written into it.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

/// `n` distinct free ports on 127.0.0.1. All listeners are held until every
/// port is chosen, so the ports differ; another process may still take one
/// before it is used, which is acceptable for development.
pub fn free_ports(n: usize) -> Result<Vec<u16>, DevPkiError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(DevPkiError::Port)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(DevPkiError::Port))
        .collect()
}
