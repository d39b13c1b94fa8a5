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

/// Where dev gateways' ports are drawn from: below Linux's default
/// ephemeral range (32768–60999), from which the kernel picks the local
/// port of every outgoing connection. A port from that range (what binding
/// port 0 gives) can be taken by some client's connection while a test has
/// killed the gateway that listened on it, and the restart then fails with
/// "address in use"; a port below it cannot.
const DEV_PORTS: std::ops::Range<u16> = 10_000..32_768;

/// Random draws before giving up on finding `n` free ports.
const PORT_DRAWS: usize = 1_000;

/// Every port this process has handed out. A port is free again once its
/// probe listener closes, but the gateway it was chosen for may not have
/// bound it yet: two federations made at once (tests run in parallel)
/// must not be handed the same one.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// `n` distinct free ports on 127.0.0.1, from [`DEV_PORTS`], none handed
/// out before by this process. Another process may still take one before
/// it is used, which is acceptable for development.
pub fn free_ports(n: usize) -> Result<Vec<u16>, DevPkiError> {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut ports = Vec::with_capacity(n);
    let mut draws = 0;
    while ports.len() < n {
        draws += 1;
        if draws > PORT_DRAWS {
            return Err(DevPkiError::Port(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "no {n} free ports on 127.0.0.1 between {} and {}",
                    DEV_PORTS.start, DEV_PORTS.end
                ),
            )));
        }
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), DEV_PORTS);
        if handed_out.contains(&port) {
            continue;
        }
        // Free now, as far as this probe can tell.
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            handed_out.insert(port);
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(8).unwrap();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 8, "{ports:?}");
        for port in ports {
            assert!(DEV_PORTS.contains(&port), "{port}");
            // Released again: the gateway that gets it can listen on it.
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap();
        }
    }
}
