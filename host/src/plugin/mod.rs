//! Loading and validating plugins.
//!
//! Owns: turning a path into a [`LoadedPlugin`] — canonicalize (dlopen would
//! search the library path for a bare name), reject what is not a shared
//! library before dlopen sees it, resolve `lk_plugin_entry`, validate the
//! descriptor (magic, ABI major equal, plugin minor <= host minor, non-null
//! `run`) — and the host side of the ABI: the state behind its handles
//! ([`handle`]), its functions ([`host_api`] 1.0-1.2, [`media_api`] 1.3,
//! [`job_api`] and [`stream_api`] 1.4) and the table ([`table`]).
//!
//! Must not touch: rooms or the network. Validation happens before anything
//! connects. Libraries are never unloaded: one job per process, and code of a
//! plugin may still run in a thread that overran its deadline.

pub(crate) mod handle;
pub(crate) mod host_api;
pub(crate) mod job_api;
pub(crate) mod media_api;
pub(crate) mod stream_api;
pub(crate) mod table;
mod wait;

use lk_plugin_api::abi::{
    LkPluginDescriptor, LkPluginEntryFn, LkRunFn, LK_ABI_MAJOR, LK_ABI_MINOR,
    LK_PLUGIN_ENTRY_SYMBOL, LK_PLUGIN_MAGIC,
};
use std::path::{Path, PathBuf};

/// The job is over for the plugin: its handle answers as after shutdown,
/// the room's events are released, and every media handle, stream reader
/// and writer it left open is closed (see [`handle`]).
pub(crate) fn retire_job(job: &'static handle::JobHandle) {
    job.retire();
    stream_api::close_all(job);
}

/// Longest descriptor name or version accepted, in bytes.
pub const MAX_DESCRIPTOR_STR_LEN: usize = 256;

/// Why a plugin was refused. Each variant has its own exit code
/// (`crate::exit`); the message is one line naming the path.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoadError {
    #[error("plugin not found: {path}: {detail}; check the path (a relative one is taken from the current directory) or build the plugin first (the examples: cargo xtask build-plugins)")]
    NotFound { path: PathBuf, detail: String },
    #[error("not a shared library: {path}: {detail}; build the plugin as a cdylib / -shared / -buildmode=c-shared")]
    NotSharedLibrary { path: PathBuf, detail: String },
    #[error("missing entry symbol `{symbol}` in {path}; export it with export_plugin! (Rust) or define it as in lk_plugin.h")]
    MissingEntry { path: PathBuf, symbol: &'static str },
    #[error("bad magic 0x{found:08x} in {path} (expected 0x{expected:08x}); the descriptor is not an lk-go plugin descriptor; build it from lk_plugin.h (LK_PLUGIN_MAGIC first), or with the Rust or Go SDK", expected = LK_PLUGIN_MAGIC)]
    BadMagic { path: PathBuf, found: u32 },
    #[error("ABI major mismatch in {path}: plugin ABI {plugin_major}.{plugin_minor}, host ABI {host_major}.{host_minor}; rebuild the plugin against lk_plugin.h {host_major}.x")]
    AbiMajorMismatch {
        path: PathBuf,
        plugin_major: u16,
        plugin_minor: u16,
        host_major: u16,
        host_minor: u16,
    },
    #[error("plugin is newer than host in {path}: plugin ABI {plugin_major}.{plugin_minor}, host ABI {host_major}.{host_minor}; upgrade lk-go or rebuild the plugin against ABI {host_major}.{host_minor}")]
    PluginTooNew {
        path: PathBuf,
        plugin_major: u16,
        plugin_minor: u16,
        host_major: u16,
        host_minor: u16,
    },
    #[error("invalid plugin descriptor in {path}: {detail}; fix what lk_plugin_entry returns (lk_plugin.h says what each field must hold; a Go plugin calls lkgo.Register once, from init, and the SDK's reason is on stderr)")]
    InvalidDescriptor { path: PathBuf, detail: String },
}

/// A validated plugin, loaded for the rest of the process.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub abi_major: u16,
    pub abi_minor: u16,
    pub(crate) run: LkRunFn,
}

impl LoadedPlugin {
    /// One line describing the plugin, as `lk-go plugin inspect` prints it.
    pub fn describe(&self) -> String {
        format!(
            "{} {} (ABI {}.{}, host ABI {}.{}) at {}",
            self.name,
            self.version,
            self.abi_major,
            self.abi_minor,
            LK_ABI_MAJOR,
            LK_ABI_MINOR,
            self.path.display()
        )
    }
}

/// Checks the file itself before dlopen: dlopen's own messages for a
/// directory, an empty file or a text file are obscure.
fn precheck(path: &Path) -> Result<(), LoadError> {
    let not_lib = |detail: &str| LoadError::NotSharedLibrary {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| not_lib(&e.to_string()))?;
    if meta.is_dir() {
        return Err(not_lib("is a directory"));
    }
    if meta.len() == 0 {
        return Err(not_lib("is empty"));
    }
    #[cfg(target_os = "linux")]
    {
        use std::io::Read;
        let mut head = [0u8; 18];
        let mut f = std::fs::File::open(path).map_err(|e| not_lib(&e.to_string()))?;
        let n = f.read(&mut head).map_err(|e| not_lib(&e.to_string()))?;
        if n < 18 || &head[..4] != b"\x7fELF" {
            let printable = head[..n]
                .iter()
                .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
            return Err(not_lib(if printable {
                "is a text file, not an ELF shared object"
            } else {
                "is not an ELF file"
            }));
        }
        // e_type, little or big endian per EI_DATA.
        let e_type = if head[5] == 2 {
            u16::from_be_bytes([head[16], head[17]])
        } else {
            u16::from_le_bytes([head[16], head[17]])
        };
        const ET_EXEC: u16 = 2;
        const ET_DYN: u16 = 3;
        match e_type {
            ET_DYN => {}
            ET_EXEC => return Err(not_lib("is an executable, not a shared library")),
            _ => return Err(not_lib("is an ELF object that is not a shared library")),
        }
    }
    Ok(())
}

/// Loads and validates the plugin at `path`. Connects to nothing.
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| LoadError::NotFound {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    precheck(&canonical)?;

    // RTLD_NOW: resolve every symbol now, so a plugin with an undefined
    // symbol fails here (65, before connecting) instead of dying mid-job
    // with exit 127 at its first call through the lazy binding.
    // SAFETY: loading a library runs its initialisers; that is the point of
    // a plugin and the user asked for this file.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some(&canonical),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map_err(|e| LoadError::NotSharedLibrary {
        path: canonical.clone(),
        detail: one_line(&e.to_string()),
    })?;
    // Never unloaded (see the module doc).
    let lib: &'static libloading::os::unix::Library = Box::leak(Box::new(lib));

    let symbol = format!("{LK_PLUGIN_ENTRY_SYMBOL}\0");
    // SAFETY: the type is the one lk_plugin.h declares for the symbol.
    let entry: LkPluginEntryFn = unsafe { lib.get::<LkPluginEntryFn>(symbol.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| LoadError::MissingEntry {
            path: canonical.clone(),
            symbol: LK_PLUGIN_ENTRY_SYMBOL,
        })?;

    // SAFETY: calling the plugin's entry function as the ABI prescribes.
    let desc_ptr = unsafe { entry() };
    if desc_ptr.is_null() {
        return Err(LoadError::InvalidDescriptor {
            path: canonical,
            detail: format!("{LK_PLUGIN_ENTRY_SYMBOL}() returned NULL"),
        });
    }
    // Read the magic alone first: if it is wrong, nothing else in the
    // struct can be trusted to have this layout.
    // SAFETY: every descriptor of every ABI version starts with a u32 magic.
    let magic = unsafe { std::ptr::read(desc_ptr as *const u32) };
    if magic != LK_PLUGIN_MAGIC {
        return Err(LoadError::BadMagic {
            path: canonical,
            found: magic,
        });
    }
    // SAFETY: magic matches, so this is a descriptor of some 1.x or later
    // layout, whose header (magic, major, minor) is fixed forever.
    let desc: &'static LkPluginDescriptor = unsafe { &*desc_ptr };
    let (pmaj, pmin) = (desc.abi_major, desc.abi_minor);
    if pmaj != LK_ABI_MAJOR {
        return Err(LoadError::AbiMajorMismatch {
            path: canonical,
            plugin_major: pmaj,
            plugin_minor: pmin,
            host_major: LK_ABI_MAJOR,
            host_minor: LK_ABI_MINOR,
        });
    }
    if pmin > LK_ABI_MINOR {
        return Err(LoadError::PluginTooNew {
            path: canonical,
            plugin_major: pmaj,
            plugin_minor: pmin,
            host_major: LK_ABI_MAJOR,
            host_minor: LK_ABI_MINOR,
        });
    }
    let Some(run) = desc.run else {
        return Err(LoadError::InvalidDescriptor {
            path: canonical,
            detail: "run entrypoint is NULL".into(),
        });
    };
    // SAFETY: descriptor strings are static data of the (never unloaded)
    // library; their lengths are not trusted (see `plugin_text`).
    let (name, name_cut) =
        unsafe { handle::plugin_text(desc.name.ptr, desc.name.len, MAX_DESCRIPTOR_STR_LEN) };
    let (version, version_cut) =
        unsafe { handle::plugin_text(desc.version.ptr, desc.version.len, MAX_DESCRIPTOR_STR_LEN) };
    if name_cut > 0 || version_cut > 0 {
        return Err(LoadError::InvalidDescriptor {
            path: canonical,
            detail: format!(
                "plugin name or version is longer than {MAX_DESCRIPTOR_STR_LEN} bytes (a wrong length?)"
            ),
        });
    }
    if name.chars().chain(version.chars()).any(char::is_control) {
        return Err(LoadError::InvalidDescriptor {
            path: canonical,
            detail: "plugin name or version contains a control character".into(),
        });
    }
    if name.trim().is_empty() {
        return Err(LoadError::InvalidDescriptor {
            path: canonical,
            detail: "plugin name is empty".into(),
        });
    }
    Ok(LoadedPlugin {
        path: canonical,
        name,
        version,
        abi_major: pmaj,
        abi_minor: pmin,
        run,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
