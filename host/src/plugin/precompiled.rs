//! Compiled policies kept on disk, so that a restart or a reload of a large component (a Python
//! policy's is ~20 MB of CPython) deserializes native code instead of compiling for seconds.
//!
//! Loading native code runs whatever the file says, so the directory is trusted input only when
//! nobody else can write it: it must be a real directory owned by this process's user with no
//! access for group or others (created 0700), and each artifact a file of that user that only it
//! can write; otherwise the cache is not used. Artifacts are named by the component's SHA-256 and
//! the engine's compatibility hash (wasmtime version, compiler and its settings), carry a
//! SHA-256 of their own bytes (a torn or corrupted file is a miss, not a crash), and are written
//! to a private temporary file renamed into place.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Artifacts kept at most; the least recently used beyond are removed when one is added.
const MAX_ARTIFACTS: usize = 64;

/// A private directory of precompiled components for one engine configuration.
pub struct PrecompiledDir {
    dir: PathBuf,
    /// The engine's compatibility hash, in every artifact's name.
    engine_key: String,
    /// Components loaded from disk.
    pub hits: AtomicU64,
}

impl PrecompiledDir {
    /// Opens (creating it 0700 if missing) the directory, or says why it cannot be trusted.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, String> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let me = own_uid()?;
        if meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{} is not private to this user (owner uid {}, mode {:o}; needs uid {me}, mode 0700): compiled code loaded from it would be trusted",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", h.finish()),
            hits: AtomicU64::new(0),
        })
    }

    fn path(&self, content: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex(content), self.engine_key))
    }

    /// The component compiled from content with this hash, if a trusted artifact has it.
    pub fn load(&self, engine: &Engine, content: &[u8; 32]) -> Option<Component> {
        let path = self.path(content);
        let mut file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.uid() != own_uid().ok()? || meta.mode() & 0o022 != 0 {
            tracing::warn!(file = %path.display(), "compiled policy not trusted (owner or mode); compiling instead");
            return None;
        }
        // From the handle whose owner and mode were checked, not the path again.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).ok()?;
        let (sum, code) = bytes.split_at_checked(32)?;
        if sha2::Sha256::digest(code).as_slice() != sum {
            tracing::warn!(file = %path.display(), "compiled policy is damaged; compiling instead");
            return None;
        }
        let component = deserialize(engine, code)
            .inspect_err(|e| tracing::warn!(file = %path.display(), "compiled policy refused by the engine ({e}); compiling instead"))
            .ok()?;
        // Recently used: kept when the directory is trimmed.
        let _ = file.set_modified(std::time::SystemTime::now());
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(component)
    }

    /// Writes a freshly compiled component. Failures only cost the next start a compile.
    pub fn store(&self, content: &[u8; 32], component: &Component) {
        if let Err(e) = self.try_store(content, component) {
            tracing::warn!(dir = %self.dir.display(), "could not keep a compiled policy: {e}");
        }
    }

    fn try_store(&self, content: &[u8; 32], component: &Component) -> Result<(), String> {
        let code = component.serialize().map_err(|e| e.to_string())?;
        let path = self.path(content);
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            hex(content),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&sha2::Sha256::digest(&code))?;
                f.write_all(&code)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.to_string());
        }
        self.trim();
        Ok(())
    }

    /// Removes the least recently used artifacts beyond `MAX_ARTIFACTS`.
    fn trim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut artifacts: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if artifacts.len() <= MAX_ARTIFACTS {
            return;
        }
        artifacts.sort_unstable_by_key(|(t, _)| std::cmp::Reverse(*t));
        for (_, path) in &artifacts[MAX_ARTIFACTS..] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The artifact's code as a component of this engine.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires the bytes to come from `serialize` of a compatible engine and to
    // be trusted. They come from a file of this user in a directory only it can access (both
    // checked above), written by `try_store` with a SHA-256 that was just verified; wasmtime
    // checks the engine compatibility itself.
    unsafe { Component::deserialize(engine, code) }
}

/// The user this process runs as (the owner of `/proc/self`).
fn own_uid() -> Result<u32, String> {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell this process's user (/proc/self: {e})"))
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
