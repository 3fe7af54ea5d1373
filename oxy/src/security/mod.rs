//! Hardening of the running process: the system call filter (`seccomp`) and the user and
//! group it drops to once its sockets are bound (`privileges`).

pub(crate) mod privileges;
pub(crate) mod seccomp;
