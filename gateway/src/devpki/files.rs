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
    pick_free(n, draws())
}

/// [`PORT_DRAWS`] random ports from [`DEV_PORTS`].
fn draws() -> impl Iterator<Item = u16> {
    let mut rng = rand::thread_rng();
    std::iter::repeat_with(move || rand::Rng::gen_range(&mut rng, DEV_PORTS)).take(PORT_DRAWS)
}

/// The first `n` of `candidates` that this process has not handed out and
/// that a listener can bind now.
fn pick_free(n: usize, candidates: impl IntoIterator<Item = u16>) -> Result<Vec<u16>, DevPkiError> {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut ports = Vec::with_capacity(n);
    for port in candidates {
        if ports.len() == n {
            break;
        }
        if handed_out.contains(&port) {
            continue;
        }
        // Free now, as far as this probe can tell.
        if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok() {
            handed_out.insert(port);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(DevPkiError::Port(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "no {n} free ports on 127.0.0.1 between {} and {}",
                DEV_PORTS.start, DEV_PORTS.end
            ),
        )));
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct, in range, and never handed out twice by one process.
    /// (Whether a port is still free when its gateway binds it depends on
    /// every other process on the machine, so that is not asserted here:
    /// an earlier version did, and failed in CI.)
    #[test]
    fn dev_ports_are_distinct_below_the_ephemeral_range_and_handed_out_once() {
        let first = free_ports(8).unwrap();
        let second = free_ports(8).unwrap();
        let all: std::collections::BTreeSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 16, "{first:?} {second:?}");
        assert!(all.iter().all(|p| DEV_PORTS.contains(p)), "{all:?}");
    }

    /// A port something listens on is skipped, however often it is drawn.
    #[test]
    fn a_port_in_use_is_never_handed_out() {
        let held = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let busy = held.local_addr().unwrap().port();
        let candidates = [busy, busy, busy].into_iter().chain(draws());
        let ports = pick_free(4, candidates).unwrap();
        assert_eq!(ports.len(), 4);
        assert!(!ports.contains(&busy), "{busy} handed out: {ports:?}");
        drop(held);
    }
}
