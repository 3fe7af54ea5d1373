//! The user-space IP off-ramp: flows found in IP packets leave Oxy as ordinary sockets.
//! UDP flows through the UDP tunnel path, TCP connections through a user-space TCP/IP
//! stack into the TCP tunnel path, ICMP echo through echo sockets.

pub mod echo;
pub mod tcp_stack;
pub mod udp_flow;
