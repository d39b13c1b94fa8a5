#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bashu_gateway::fuzzing::json_strict(data));
