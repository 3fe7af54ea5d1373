#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxy_fuzz::check_proxy_protocol_tcp(data));
