//! Dropping root once every socket is bound: `security.user` and `security.group`.

use crate::settings::SecuritySettings;
use nix::unistd::{Gid, Group, Uid, User};

/// The id `name` stands for: a user's (`user`) or a group's, by name or number; `None`
/// for an empty name. The error says why it names no one.
pub(crate) fn lookup(name: &str, user: bool) -> Result<Option<u32>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    if let Ok(id) = name.parse::<u32>() {
        return Ok(Some(id));
    }
    let found = if user {
        User::from_name(name).map(|u| u.map(|u| u.uid.as_raw()))
    } else {
        Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
    };
    match found {
        Ok(Some(id)) => Ok(Some(id)),
        Ok(None) => Err(format!(
            "no {} named {name:?} on this system",
            if user { "user" } else { "group" }
        )),
        Err(e) => Err(format!("cannot look up {name:?}: {e}")),
    }
}

/// Switches every thread of the process to `security.user` and `security.group` (the
/// user's primary group when only the user is named), with that group as the only
/// supplementary one.
/// Does nothing when neither is set, or when the process already runs as them (a
/// restart's successor inherits its predecessor's identity).
pub(crate) fn drop_privileges(settings: &SecuritySettings) -> Result<(), String> {
    let uid = lookup(&settings.user, true)?;
    let mut gid = lookup(&settings.group, false)?;
    if gid.is_none()
        && let Some(uid) = uid
    {
        gid = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
    }
    let mut changed = false;
    // Switching users drops the old user's supplementary groups even when the group stays.
    let switching_user = uid.is_some_and(|uid| Uid::effective().as_raw() != uid);
    if let Some(gid) = gid
        && (Gid::effective().as_raw() != gid || switching_user)
    {
        let gid = Gid::from_raw(gid);
        nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(gid).map_err(|e| format!("setgid {gid}: {e}"))?;
        changed = true;
    }
    if let Some(uid) = uid
        && Uid::effective().as_raw() != uid
    {
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))?;
        changed = true;
    }
    if changed {
        tracing::info!(
            uid = Uid::effective().as_raw(),
            gid = Gid::effective().as_raw(),
            "running with dropped privileges"
        );
    }
    Ok(())
}
