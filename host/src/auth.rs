//! Verifying a client's password scramble, for `mysql_native_password` and
//! `caching_sha2_password`, from the password the credential source resolved.

use mysql_common::scramble::{scramble_native, scramble_sha256};

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `SHA1(pw) XOR SHA1(salt || SHA1(SHA1(pw)))`; an empty password expects an empty response.
pub fn verify_native(salt: &[u8; 20], response: &[u8], password: &str) -> bool {
    match scramble_native(salt, password.as_bytes()) {
        Some(expected) => constant_time_eq(&expected, response),
        None => response.is_empty(),
    }
}

/// `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) || salt)` (the fast path).
pub fn verify_sha2(salt: &[u8; 20], response: &[u8], password: &str) -> bool {
    match scramble_sha256(salt, password.as_bytes()) {
        Some(expected) => constant_time_eq(&expected, response),
        None => response.is_empty(),
    }
}

/// The cleartext password a client sends in caching_sha2 full authentication (over TLS only):
/// NUL-terminated.
pub fn verify_cleartext(response: &[u8], password: &str) -> bool {
    let sent = response.strip_suffix(&[0]).unwrap_or(response);
    constant_time_eq(sent, password.as_bytes())
}

/// A fresh 20-byte scramble of printable, non-NUL bytes (some clients treat it as a C string).
pub fn new_salt() -> [u8; 20] {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut salt = [0u8; 20];
    for b in &mut salt {
        *b = rng.random_range(0x21u8..0x7f);
    }
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_sha2_accept_the_right_password_only() {
        let salt = new_salt();
        let r = scramble_native(&salt, b"app-secret").expect("scramble");
        assert!(verify_native(&salt, &r, "app-secret"));
        assert!(!verify_native(&salt, &r, "wrong"));
        assert!(!verify_native(&salt, &r[..19], "app-secret"));
        let r = scramble_sha256(&salt, b"app-secret").expect("scramble");
        assert!(verify_sha2(&salt, &r, "app-secret"));
        assert!(!verify_sha2(&salt, &r, "app-secre"));
        assert!(verify_native(&salt, &[], ""));
        assert!(verify_cleartext(b"pw\0", "pw"));
    }
}
