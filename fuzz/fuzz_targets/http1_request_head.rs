#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxy_fuzz::check_http1_request_head(data));
