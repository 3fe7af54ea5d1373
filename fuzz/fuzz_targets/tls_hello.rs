#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxy_fuzz::check_tls_hello(data));
