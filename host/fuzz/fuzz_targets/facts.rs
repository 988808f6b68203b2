//! Fuzzes the statement lexer: any bytes, as the session sees them (lossy UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let _ = sluice::facts::analyze(&sql);
});
