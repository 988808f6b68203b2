//! The Sluice policy SDK: what a policy needs to be plain `no_std` Rust on `wasm32-wasip2`
//! without importing any WASI interface (the gateway refuses plugins that import anything but
//! `sluice:policy/host`).
//!
//! A policy crate:
//! ```ignore
//! #![cfg_attr(target_arch = "wasm32", no_std)]
//! extern crate alloc;
//! sluice_policy_sdk::runtime!();
//! wit_bindgen::generate!({ path: "../../wit/wit", world: "guard" });
//! ```
//! On the host (for unit tests) the crate builds with std and none of this is active.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub use serde;

/// The policy contract this SDK was built against. Including it makes cargo rebuild the SDK, and
/// so every policy crate, when `wit/` changes: `wit_bindgen::generate!` reads the file without
/// telling cargo.
pub const POLICY_WIT: &str = include_str!("../../../wit/wit/policy.wit");
pub use serde_json;
pub use wit_bindgen;

use alloc::string::{String, ToString};

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// A panic traps: the gateway discards the instance and applies the policy's `on-error`.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// `memcmp`/`bcmp` for slice and string comparisons: the `wasm32-wasip2` sysroot expects them
/// from wasi-libc, which a `no_std` policy does not link. Volatile reads keep the optimiser from
/// turning the loop back into a call to itself.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller passes two readable regions of n bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Defines `cabi_realloc`, the allocator entry point of the component model's canonical ABI
/// (std would get it from wasi-libc). Call once in the policy crate's root.
#[macro_export]
macro_rules! runtime {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn cabi_realloc(
            old_ptr: *mut u8,
            old_len: usize,
            align: usize,
            new_len: usize,
        ) -> *mut u8 {
            $crate::realloc(old_ptr, old_len, align, new_len)
        }
    };
}

/// The body of `cabi_realloc`.
///
/// # Safety
/// Called by the canonical ABI only, with a pointer it got from here and its layout.
#[doc(hidden)]
#[allow(unsafe_code)]
pub unsafe fn realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, handle_alloc_error, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a power-of-two alignment and the layout it allocated with.
    unsafe {
        let ptr = if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        };
        if ptr.is_null() {
            handle_alloc_error(Layout::from_size_align_unchecked(new_len, align));
        }
        ptr
    }
}

/// A policy's global state (its settings, counters), initialised with `Default` on first use.
///
/// A component instance runs on one thread, and the gateway calls an instance from one thread at
/// a time; on the host (unit tests) a mutex stands in.
pub struct Global<T> {
    #[cfg(target_arch = "wasm32")]
    cell: core::cell::RefCell<Option<T>>,
    #[cfg(not(target_arch = "wasm32"))]
    cell: std::sync::Mutex<Option<T>>,
}

// SAFETY: wasm32 without the threads proposal has exactly one thread.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
unsafe impl<T> Sync for Global<T> {}

impl<T: Default> Global<T> {
    pub const fn new() -> Self {
        Self {
            #[cfg(target_arch = "wasm32")]
            cell: core::cell::RefCell::new(None),
            #[cfg(not(target_arch = "wasm32"))]
            cell: std::sync::Mutex::new(None),
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(target_arch = "wasm32")]
        let mut guard = self.cell.borrow_mut();
        #[cfg(not(target_arch = "wasm32"))]
        let mut guard = self
            .cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(guard.get_or_insert_with(T::default))
    }
}

impl<T: Default> Default for Global<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a policy's JSON settings into its settings type, with an error the operator can act on.
pub fn settings<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let text = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(text).map_err(|e| {
        let mut m = String::from("invalid settings: ");
        m.push_str(&e.to_string());
        m
    })
}

/// Matches `text` against a pattern where `*` stands for any run of characters and `?` for one;
/// ASCII case-insensitive (SQL names are).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: alloc::vec::Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let t: alloc::vec::Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*email*", "customer_EMAIL"));
        assert!(wildcard_match("app.users.*", "app.users.ssn"));
        assert!(wildcard_match("c?rd", "card"));
        assert!(!wildcard_match("app.users.*", "app.orders.id"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn settings_errors_say_what_is_wrong() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            n: u32,
        }
        assert!(settings::<S>("{\"n\": 1}").is_ok());
        let e = settings::<S>("{\"n\": \"x\"}").expect_err("bad");
        assert!(e.starts_with("invalid settings"), "{e}");
    }
}
