//! The seccomp allow-list: every system call the runtime, quinn, DNS, TLS, splice, TUN
//! devices and the profilers need is allowed; anything else (`execve`, `ptrace`, `mount`,
//! `bpf`, module loading, namespaces, ...) is stopped and reported.
//!
//! Two calls are allowed with conditions: `clone` without any `CLONE_NEW*` flag (no new
//! namespaces) and `ioctl` except `TIOCSTI` and `TIOCLINUX` (no typing into a terminal).
//! An application that needs more lists the calls in `security.allow_syscalls`.
//!
//! The filter is installed on the main thread before the runtime starts, so every thread
//! created after it inherits it; the one thread started before it is the restart
//! launcher (`restart::launcher`), the only one that may `execve` a successor. A
//! forbidden call traps (SIGSYS): the handler reports it through a pipe and makes the
//! call fail with `EPERM`, or, with `on_violation: kill`, writes its name to stderr and
//! exits the process with status 159.

// The SIGSYS handler needs `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use crate::settings::{OnViolation, SeccompMode, SecuritySettings};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use syscalls::Sysno;

/// The system calls a proxy needs; names that do not exist on this architecture (e.g.
/// `open` on aarch64) are skipped.
const ALLOWED: &[&str] = &[
    // Files and descriptors.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "close",
    "close_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "lseek",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents64",
    "getcwd",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "creat",
    "fchmod",
    "umask",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "splice",
    "tee",
    "sendfile",
    "copy_file_range",
    "eventfd",
    "eventfd2",
    "memfd_create",
    // Memory.
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "mincore",
    "msync",
    "mlock",
    "munlock",
    "get_mempolicy",
    // Polling, time and timers.
    "select",
    "pselect6",
    "poll",
    "ppoll",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "setitimer",
    "getitimer",
    "alarm",
    // Threads, processes and signals.
    // `clone` and `ioctl` are allowed with argument rules (see `rules`). `clone3`, whose
    // flags a filter cannot read, passes this filter and fails with ENOSYS in a second
    // one (`NO_CLONE3`); the C library then falls back to `clone`.
    "clone3",
    "futex",
    "futex_waitv",
    "set_robust_list",
    "get_robust_list",
    "set_tid_address",
    "rseq",
    "sched_yield",
    "sched_getaffinity",
    "getcpu",
    "sched_setaffinity",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "kill",
    "tgkill",
    "tkill",
    "pidfd_open",
    "pidfd_send_signal",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "sigaltstack",
    "restart_syscall",
    "prctl",
    "arch_prctl",
    "membarrier",
    "getpid",
    "getppid",
    "gettid",
    "getpgrp",
    "getsid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getresuid",
    "getresgid",
    "capget",
    "uname",
    "sysinfo",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "getrandom",
    "getpriority",
    "sched_getparam",
    "sched_getscheduler",
    // Dropping privileges after binding (`security.user`, `security.group`).
    "setuid",
    "setgid",
    "setgroups",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    // Sockets.
    "socket",
    "socketpair",
    "connect",
    "accept",
    "accept4",
    "bind",
    "listen",
    "shutdown",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
];

/// Where the SIGSYS handler writes the number of each forbidden call (-1 before install).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether a forbidden call exits the process (`on_violation: kill`).
static KILL: AtomicBool = AtomicBool::new(false);

/// Installs the filter `security.seccomp` asks for on the calling thread (threads it
/// starts later inherit it). Returns the read end of the report pipe under `enforce`,
/// for [`report_violations`].
pub(crate) fn install(settings: &SecuritySettings) -> std::io::Result<Option<OwnedFd>> {
    let mismatch = match settings.seccomp {
        SeccompMode::Off => return Ok(None),
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Enforce => SeccompAction::Trap,
    };
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        && mismatch == SeccompAction::Trap
    {
        return Err(std::io::Error::other(format!(
            "enforce is supported on x86_64 and aarch64, not {} (use log or off)",
            std::env::consts::ARCH
        )));
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| std::io::Error::other(format!("seccomp: {e:?}")))?;
    let rules = rules(&settings.allow_syscalls).map_err(std::io::Error::other)?;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| std::io::Error::other(format!("seccomp filter: {e}")))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e| std::io::Error::other(format!("seccomp filter: {e:?}")))?;
    let report = if settings.seccomp == SeccompMode::Enforce {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        KILL.store(
            settings.on_violation == OnViolation::Kill,
            Ordering::Relaxed,
        );
        REPORT_FD.store(
            std::os::fd::IntoRawFd::into_raw_fd(write),
            Ordering::Relaxed,
        );
        install_sigsys_handler()?;
        Some(read)
    } else {
        None
    };
    if settings.seccomp == SeccompMode::Enforce {
        // Stacked, first (the main filter forbids `seccomp` itself): of two filters'
        // answers the stricter holds, so `clone3`, which the main one allows, fails with
        // ENOSYS.
        let clone3 = BTreeMap::from([(i64::from(Sysno::clone3.id()), Vec::new())]);
        let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
        let no_clone3 = SeccompFilter::new(clone3, SeccompAction::Allow, enosys, arch)
            .map_err(|e| std::io::Error::other(format!("seccomp filter: {e}")))?;
        let no_clone3: BpfProgram = no_clone3
            .try_into()
            .map_err(|e| std::io::Error::other(format!("seccomp filter: {e:?}")))?;
        seccompiler::apply_filter(&no_clone3)
            .map_err(|e| std::io::Error::other(format!("seccomp: {e}")))?;
    }
    seccompiler::apply_filter(&program)
        .map_err(|e| std::io::Error::other(format!("seccomp: {e}")))?;
    Ok(report)
}

/// The filter's rules: every allowed call, `clone` and `ioctl` with their conditions, and
/// the application's `extra` names (an unknown one is an error).
fn rules(extra: &[String]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Condition};
    let condition =
        |arg, len, op, value| Condition::new(arg, len, op, value).map_err(|e| e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in ALLOWED
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        match Sysno::from_str(name) {
            Ok(call) => {
                rules.insert(i64::from(call.id()), Vec::new());
            }
            Err(_) if ALLOWED.contains(&name) => {} // not on this architecture
            Err(_) => {
                return Err(format!(
                    "security.allow_syscalls: no system call named {name:?}"
                ));
            }
        }
    }
    let no_namespaces = condition(0, Len::Qword, Op::MaskedEq(CLONE_NEW_FLAGS), 0)?;
    let clone = SeccompRule::new(vec![no_namespaces]).map_err(|e| e.to_string())?;
    rules
        .entry(i64::from(Sysno::clone.id()))
        .or_insert_with(|| vec![clone]);
    let ioctl = SeccompRule::new(vec![
        condition(1, Len::Dword, Op::Ne, TIOCSTI)?,
        condition(1, Len::Dword, Op::Ne, TIOCLINUX)?,
    ])
    .map_err(|e| e.to_string())?;
    rules
        .entry(i64::from(Sysno::ioctl.id()))
        .or_insert_with(|| vec![ioctl]);
    Ok(rules)
}

/// Every `clone` flag that makes a new namespace.
const CLONE_NEW_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
/// `ioctl` requests that push input into a terminal.
const TIOCSTI: u64 = libc::TIOCSTI;
const TIOCLINUX: u64 = libc::TIOCLINUX;

/// Logs and counts each forbidden call the handler reports, until the process ends.
pub(crate) async fn report_violations(read: OwnedFd) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else {
        tracing::error!("seccomp violations cannot be read; they are not reported");
        return;
    };
    let mut number = [0u8; 4];
    while tokio::io::AsyncReadExt::read_exact(&mut pipe, &mut number)
        .await
        .is_ok()
    {
        let id = i32::from_ne_bytes(number);
        let name = syscall_name(id);
        crate::telemetry::framework_metrics::oxy_seccomp::violations_total(name).inc();
        tracing::error!(
            syscall = name,
            number = id,
            "seccomp: a forbidden system call was refused (EPERM)"
        );
    }
}

/// The name of system call `id` (`"unknown"` when it has none here).
fn syscall_name(id: i32) -> &'static str {
    usize::try_from(id)
        .ok()
        .and_then(Sysno::new)
        .map_or("unknown", |call| call.name())
}

fn install_sigsys_handler() -> std::io::Result<()> {
    // SAFETY: `on_sigsys` only makes async-signal-safe calls (write, _exit) and writes
    // the interrupted thread's saved return register; the struct is zeroed then filled.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The kernel's `siginfo_t` for SIGSYS (`_sigsys` in `<asm-generic/siginfo.h>`).
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    #[cfg(target_pointer_width = "64")]
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a SIGSYS siginfo (laid out as `SigsysInfo`) and the
    // interrupted thread's ucontext; both live for the handler's duration.
    unsafe {
        let id = (*(info as *const SigsysInfo)).syscall;
        let saved_errno = *libc::__errno_location();
        if KILL.load(Ordering::Relaxed) {
            let name = syscall_name(id);
            for part in [
                "oxy: seccomp: forbidden system call ".as_bytes(),
                name.as_bytes(),
                "; exiting\n".as_bytes(),
            ] {
                libc::write(2, part.as_ptr().cast(), part.len());
            }
            libc::_exit(159);
        }
        let fd = REPORT_FD.load(Ordering::Relaxed);
        if fd >= 0 {
            let bytes = id.to_ne_bytes();
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        }
        set_return_value(context.cast(), -i64::from(libc::EPERM));
        *libc::__errno_location() = saved_errno;
    }
}

/// Makes the trapped system call return `value` when the handler returns.
///
/// # Safety
/// `context` must be the `ucontext_t` the kernel passed to the signal handler.
unsafe fn set_return_value(context: *mut libc::ucontext_t, value: i64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's promise; REG_RAX holds a system call's return value.
    unsafe {
        (*context).uc_mcontext.gregs[libc::REG_RAX as usize] = value;
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller's promise; x0 holds a system call's return value.
    unsafe {
        (*context).uc_mcontext.regs[0] = value as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_allowed_name_is_a_system_call() {
        // A misspelt name would silently leave a call out of the filter.
        for name in ALLOWED {
            assert!(Sysno::from_str(name).is_ok(), "{name} is not a system call");
        }
    }

    #[test]
    fn rules_take_extra_names_and_refuse_unknown_ones() {
        let allowed = rules(&["inotify_init1".into()]).unwrap();
        assert!(allowed.contains_key(&i64::from(Sysno::inotify_init1.id())));
        assert_eq!(
            allowed[&i64::from(Sysno::clone.id())].len(),
            1,
            "clone has its condition"
        );

        assert!(
            rules(&["no_such_call".into()])
                .unwrap_err()
                .contains("no_such_call")
        );
    }

    #[test]
    fn forbidden_calls_are_not_allowed() {
        for name in [
            "execve",
            "execveat",
            "ptrace",
            "mount",
            "bpf",
            "init_module",
            "unshare",
            "setns",
            "kexec_load",
            "process_vm_readv",
        ] {
            assert!(!ALLOWED.contains(&name), "{name} must stay forbidden");
        }
    }

    #[test]
    fn names_come_from_numbers() {
        assert_eq!(syscall_name(Sysno::execve.id()), "execve");
        assert_eq!(syscall_name(-1), "unknown");
    }
}
