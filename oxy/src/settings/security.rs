//! The `security:` section: the system call filter and the user and group to run as.

use crate::oxy_app_settings;

/// The `security:` section.
#[oxy_app_settings]
pub struct SecuritySettings {
    /// A seccomp filter that allows only the system calls a proxy needs (networking,
    /// files, memory, threads, timers, TUN devices), installed before the first endpoint
    /// is bound and covering every thread but the one that starts a restart's successor.
    pub seccomp: SeccompMode,
    /// What a forbidden system call does under `seccomp: enforce`.
    pub on_violation: OnViolation,
    /// More system calls to allow, by name (`inotify_init1`), for what an application's
    /// hooks need beyond the proxy's own.
    pub allow_syscalls: Vec<String>,
    /// Run as this user (a name or a numeric id) once every endpoint is bound; empty keeps
    /// the user Oxy was started as. Files read later (a restart's settings, TLS keys
    /// reloaded by a successor) must be readable by this user.
    pub user: String,
    /// Run as this group (a name or a numeric id) once every endpoint is bound; empty
    /// means the user's primary group when `user` is set, and no change otherwise.
    pub group: String,
}

/// Whether the system call filter is installed and what it does.
#[oxy_app_settings]
pub enum SeccompMode {
    /// Forbidden system calls are stopped as `on_violation` says.
    #[default]
    Enforce,
    /// Forbidden system calls run, and the kernel logs each (audit log or `dmesg`).
    Log,
    /// No filter.
    Off,
}

/// What happens to a forbidden system call under `seccomp: enforce`.
#[oxy_app_settings]
pub enum OnViolation {
    /// The call fails with `EPERM` and the process goes on; an error line names the call
    /// and `oxy_seccomp_violations_total{syscall}` counts it.
    #[default]
    Errno,
    /// The process writes the call's name to stderr and exits with status 159 (128 +
    /// SIGSYS).
    Kill,
}
